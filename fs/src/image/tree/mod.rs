//! A layer's tree in the store's binary form: what a mount reads instead of
//! parsing the layer's JSON table of contents, so that mounting an image
//! costs the same whatever its size.
//!
//! Built once per layer from its checked [`Toc`] ([`build`]), stored
//! under the TOC's digest (`ROOT/trees/`), mapped read-only by each mount,
//! and read one directory at a time: a lookup walks the path from the root,
//! binary-searching each directory's children by name, and touches only the
//! pages of the directories on its way. In the spirit of EROFS and nydus's
//! RAFS v6 bootstrap: fixed-size records reachable by index, names and
//! other variable bytes in one string table, each directory's children
//! contiguous and sorted.
//!
//! ```text
//! header   256 bytes: magic, version, the TOC digest and data placement it
//!          was built for, counts, section offsets, the root's CRC, its own CRC
//! nodes    96 bytes each, breadth first from the root (0): a directory's
//!          children are a run of nodes sorted by name, after it
//! files    64 bytes each: size, digest, its chunks, its names (hard links)
//! chunks   72 bytes each: offset and length in the file, digest, blob range
//! links    u32 node ids, the names of each file
//! order    16 bytes each: every chunk in the blob, by blob offset
//! strings  names, symlink targets, xattrs
//! ```
//!
//! # Never trusted
//!
//! The file lives in the user's own store (0700), but a crash, a full disk
//! or a bad sector can leave it short or damaged. So a mount checks the
//! header (magic, version, length, section layout, its CRC, the TOC it
//! names) before it uses a tree, and every directory and file is checked
//! the first time it is used: a directory's CRC covers its children's
//! records and strings (so each record is vouched for by its parent's, up
//! to the header's), a file's covers its record, chunks and links, and the
//! values are checked for sense (names, ranges, chunks tiling the file,
//! offsets inside the blob's data). What fails gives the request EIO, is
//! logged, and the file is removed so the next mount builds it again from
//! the TOC. Every read is bounds-checked: a damaged tree never panics and
//! never serves an unchecked byte (file contents are checked against the
//! chunk digests of a checked file record, as always).

mod build;
mod check;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use build::build;

use super::digest::Digest;
use super::toc::{Chunk, DataIn, Source, Toc, MAX_CHUNK, MAX_PATH, NONE};
use crate::error::layer_error;
use crate::layer::{Attr, Kind, Time};

/// The first bytes of every tree file.
const MAGIC: &[u8; 8] = b"RCFSTREE";
/// The format's version: a tree of another version is built again (its
/// file name differs; gc removes the old one).
pub const VERSION: u32 = 2;
const HEADER_LEN: usize = 256;
const NODE_LEN: usize = 96;
const FILE_LEN: usize = 64;
const CHUNK_LEN: usize = 72;
const LINK_LEN: usize = 4;
const ORDER_LEN: usize = 16;
/// Where the header's own CRC is (it covers the bytes before it).
const HEADER_CRC: usize = HEADER_LEN - 4;

/// The file name of the tree of the TOC `toc` whose data is where `data`
/// says (the same TOC could in principle sit at another place in another
/// blob, so that is part of the name).
pub fn file_name(toc: &Digest, data: DataIn) -> String {
    match data {
        DataIn::Store => format!("{}-s.v{VERSION}", toc.hex()),
        DataIn::Blob { data_end } => format!("{}-b{data_end}.v{VERSION}", toc.hex()),
    }
}

/// The TOC digest a tree file is named for, if `name` is the name of a
/// tree of this version.
pub fn toc_of_file_name(name: &str) -> Option<Digest> {
    if !name.ends_with(&format!(".v{VERSION}")) {
        return None;
    }
    let (hex, _) = name.split_once('-')?;
    Digest::from_hex(hex)
}

/// A tree's bytes: a mapping of its file in the store, or built in memory.
pub enum Bytes {
    Mapped(crate::sys::Mapping),
    Owned(Vec<u8>),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m.bytes(),
            Bytes::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (how, len) = match self {
            Bytes::Mapped(m) => ("mapped", m.bytes().len()),
            Bytes::Owned(v) => ("in memory", v.len()),
        };
        write!(f, "{len} bytes {how}")
    }
}

/// Called once when a tree turns out damaged (to remove its file).
pub type OnDamage = Box<dyn Fn() + Send + Sync>;

/// The checked header: counts and where each section starts.
#[derive(Debug, Clone, Copy)]
struct Header {
    nodes: u32,
    files: u32,
    chunks: u32,
    links: u32,
    order: u32,
    nodes_off: usize,
    files_off: usize,
    chunks_off: usize,
    links_off: usize,
    order_off: usize,
    strings_off: usize,
    strings_len: usize,
    data_bytes: u64,
    data: DataIn,
    root_crc: u32,
}

/// The section offsets of a tree with these counts, and its length.
fn layout(nodes: u32, files: u32, chunks: u32, links: u32, order: u32, strings: u64) -> [u64; 7] {
    let nodes_off = HEADER_LEN as u64;
    let files_off = nodes_off + u64::from(nodes) * NODE_LEN as u64;
    let chunks_off = files_off + u64::from(files) * FILE_LEN as u64;
    let links_off = chunks_off + u64::from(chunks) * CHUNK_LEN as u64;
    let order_off = links_off + u64::from(links) * LINK_LEN as u64;
    let strings_off = order_off + u64::from(order) * ORDER_LEN as u64;
    [
        nodes_off,
        files_off,
        chunks_off,
        links_off,
        order_off,
        strings_off,
        // (Saturating: a length past any file's is refused.)
        strings_off.saturating_add(strings),
    ]
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn kind_of(k: u8) -> Option<Kind> {
    Some(match k {
        1 => Kind::File,
        2 => Kind::Dir,
        3 => Kind::Symlink,
        4 => Kind::CharDev,
        5 => Kind::BlockDev,
        6 => Kind::Fifo,
        7 => Kind::Socket,
        _ => return None,
    })
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::File => 1,
        Kind::Dir => 2,
        Kind::Symlink => 3,
        Kind::CharDev => 4,
        Kind::BlockDev => 5,
        Kind::Fifo => 6,
        Kind::Socket => 7,
    }
}

/// A layer's tree (see the module doc).
pub struct Tree {
    bytes: Bytes,
    h: Header,
    /// Directories whose children were checked.
    dirs_ok: Bits,
    /// Files whose record, chunks and links were checked.
    files_ok: Bits,
    /// What the tree is of, for messages ("layer sha256:…").
    what: String,
    damaged: AtomicBool,
    on_damage: Option<OnDamage>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("what", &self.what)
            .field("bytes", &self.bytes)
            .field("nodes", &self.h.nodes)
            .field("files", &self.h.files)
            .finish()
    }
}

/// One entry, read from its checked record.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub id: u32,
    pub parent: u32,
    /// The last component (empty for the root).
    pub name: &'a [u8],
    pub attr: Attr,
    /// A symlink's target.
    pub target: Option<&'a [u8]>,
    /// A regular file's data ([`Tree::file`]), or [`NONE`].
    pub file: u32,
    /// A directory's children (node ids), sorted by name.
    pub children: Range<u32>,
    xattrs: &'a [u8],
    n_xattrs: u16,
}

impl<'a> Node<'a> {
    /// The entry's xattrs, (name, value), sorted by name.
    pub fn xattrs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let mut rest = self.xattrs;
        (0..self.n_xattrs).map_while(move |_| {
            let (k, v, r) = split_xattr(rest)?;
            rest = r;
            Some((k, v))
        })
    }
}

/// The first xattr of `b` and what follows it.
fn split_xattr(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let klen = usize::from(u16_at(b.get(..2)?, 0));
    let vlen = u32_at(b.get(..6)?, 2) as usize;
    let k = b.get(6..6 + klen)?;
    let end = (6 + klen).checked_add(vlen)?;
    let v = b.get(6 + klen..end)?;
    Some((k, v, &b[end..]))
}

/// A regular file's data, read from its checked record.
#[derive(Debug, Clone)]
pub struct FileRef<'a> {
    pub size: u64,
    /// sha256 of the whole file; `None` for an empty file.
    pub digest: Option<Digest>,
    pub chunks: Chunks<'a>,
    links: &'a [u8],
}

impl FileRef<'_> {
    /// The entries that are names of this file.
    pub fn links(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.chunks_exact(LINK_LEN).map(|b| u32_at(b, 0))
    }
}

/// A checked file's chunks, in file order.
#[derive(Debug, Clone, Copy)]
pub struct Chunks<'a>(&'a [u8]);

impl<'a> Chunks<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / CHUNK_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Chunk `i` (< [`Chunks::len`]).
    pub fn get(&self, i: usize) -> Chunk {
        decode_chunk(&self.0[i * CHUNK_LEN..(i + 1) * CHUNK_LEN])
    }

    /// The index of the first chunk for which `pred` is false (chunks for
    /// which it is true come first).
    pub fn partition_point(&self, pred: impl Fn(&Chunk) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The chunks from `i` on.
    pub fn iter_from(&self, i: usize) -> impl Iterator<Item = Chunk> + 'a {
        let b = self.0;
        (i..b.len() / CHUNK_LEN).map(move |k| decode_chunk(&b[k * CHUNK_LEN..(k + 1) * CHUNK_LEN]))
    }
}

fn decode_chunk(b: &[u8]) -> Chunk {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&b[16..48]);
    Chunk {
        offset: u64_at(b, 0),
        len: u64_at(b, 8),
        digest: Digest(digest),
        source: match b[64] {
            0 => Source::Blob {
                start: u64_at(b, 48),
                end: u64_at(b, 56),
            },
            1 => Source::Zeros,
            _ => Source::Stored,
        },
    }
}

/// A set of small numbers (files, entries) as bits, zero at first: what a
/// mount keeps per file or entry of a layer costs it 1/8 byte each.
#[derive(Debug)]
pub struct Bits(Box<[AtomicU64]>);

impl Bits {
    pub fn new(n: usize) -> Bits {
        Bits((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    pub fn get(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; returns whether it was set before.
    pub fn set(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_none_or(|w| w.fetch_or(1 << (i % 64), Ordering::AcqRel) & (1 << (i % 64)) != 0)
    }
}

/// What a tree must have been built for to be used.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub toc: Digest,
    pub data: DataIn,
}

impl Tree {
    /// The tree in `bytes` (of `what`, for messages), if its header is
    /// sound and it was built for `expect`; `on_damage` is called once if
    /// a part of it turns out damaged later.
    pub fn open(
        bytes: Bytes,
        what: String,
        expect: Expect,
        on_damage: Option<OnDamage>,
    ) -> Result<Tree, String> {
        let h = check::check_header(bytes.get(), &expect)?;
        let t = Tree {
            dirs_ok: Bits::new(h.nodes as usize),
            files_ok: Bits::new(h.files as usize),
            bytes,
            h,
            what,
            damaged: AtomicBool::new(false),
            on_damage,
        };
        // The root's record, vouched for by the header.
        let root = t.node_bytes(0);
        let mut crc = crc32fast::Hasher::new();
        crc.update(root);
        let xattrs = t
            .strings_at(
                u32_at(root, 88),
                t.xattr_len(root).ok_or("bad root xattrs")?,
            )
            .ok_or("bad root xattrs")?;
        crc.update(xattrs);
        if crc.finalize() != h.root_crc || kind_of(root[12]) != Some(Kind::Dir) {
            return Err("the root's record does not match the header".into());
        }
        Ok(t)
    }

    /// The tree of `toc` built in memory (for a layer the store does not
    /// hold: a full pull by chunks, tests).
    pub fn from_toc(toc: &Toc, what: String) -> std::io::Result<Tree> {
        // The placement the TOC was parsed for: stored files, or a blob.
        let stored = toc
            .files
            .iter()
            .any(|f| f.chunks.iter().any(|c| c.source == Source::Stored));
        let data = if stored {
            DataIn::Store
        } else {
            DataIn::Blob { data_end: u64::MAX }
        };
        let toc_digest = Digest([0; 32]);
        let fail = |e: String| layer_error(libc::EIO, format!("{what}: {e}"));
        let bytes = build(toc, &toc_digest, data).map_err(fail)?;
        let expect = Expect {
            toc: toc_digest,
            data,
        };
        Tree::open(Bytes::Owned(bytes), what.clone(), expect, None).map_err(fail)
    }

    /// How many entries and regular files the layer has, and the bytes of
    /// its files.
    pub fn counts(&self) -> (u32, u32, u64) {
        (self.h.nodes, self.h.files, self.h.data_bytes)
    }

    /// The size of the layer as a tar stream, as near as the tree tells:
    /// a 512-byte header per entry, each file's data padded to 512 bytes,
    /// and the two zero blocks at the end (extra headers for long names
    /// and PAX records are not counted).
    pub fn tar_size(&self) -> std::io::Result<u64> {
        let mut n = u64::from(self.h.nodes) * 512 + 1024;
        for f in 0..self.h.files {
            n += self.file(f)?.size.div_ceil(512) * 512;
        }
        Ok(n)
    }

    /// Where the layer's file data is.
    pub fn data(&self) -> DataIn {
        self.h.data
    }

    fn node_bytes(&self, id: u32) -> &[u8] {
        let o = self.h.nodes_off + id as usize * NODE_LEN;
        &self.bytes.get()[o..o + NODE_LEN]
    }

    fn strings_at(&self, off: u32, len: usize) -> Option<&[u8]> {
        let s = &self.bytes.get()[self.h.strings_off..self.h.strings_off + self.h.strings_len];
        s.get(off as usize..(off as usize).checked_add(len)?)
    }

    /// The length of a node's xattr bytes, if they lie in the strings.
    fn xattr_len(&self, rec: &[u8]) -> Option<usize> {
        let n = u16_at(rec, 14);
        let off = u32_at(rec, 88) as usize;
        let s = &self.bytes.get()[self.h.strings_off..self.h.strings_off + self.h.strings_len];
        let mut rest = s.get(off..)?;
        let mut len = 0;
        for _ in 0..n {
            let (k, v, r) = split_xattr(rest)?;
            len += 6 + k.len() + v.len();
            rest = r;
        }
        Some(len)
    }

    /// The error for a damaged part of the tree (removing its file once).
    fn damaged(&self, why: impl std::fmt::Display) -> std::io::Error {
        let e = layer_error(
            libc::EIO,
            format!(
                "the store's index of {} is damaged ({why}); it is built again at the next mount",
                self.what
            ),
        );
        if !self.damaged.swap(true, Ordering::Relaxed) {
            log::error!("{e}");
            if let Some(f) = &self.on_damage {
                f();
            }
        }
        e
    }

    /// Decodes the record of `id`, which the caller checked (the root, or
    /// a child of a checked directory).
    fn decode(&self, id: u32) -> Result<Node<'_>, String> {
        let r = self.node_bytes(id);
        let kind = kind_of(r[12]).ok_or("an entry of unknown type")?;
        let name = self
            .strings_at(u32_at(r, 4), usize::from(u16_at(r, 8)))
            .ok_or("a name outside the strings")?;
        let xlen = self.xattr_len(r).ok_or("xattrs outside the strings")?;
        let xattrs = self
            .strings_at(u32_at(r, 88), xlen)
            .ok_or("xattrs outside the strings")?;
        let (a, b) = (u32_at(r, 80), u32_at(r, 84));
        let mut node = Node {
            id,
            parent: u32_at(r, 0),
            name,
            attr: Attr {
                size: u64_at(r, 32),
                blocks: u64_at(r, 40),
                file_id: u64_at(r, 48),
                atime: Time(u64_at(r, 56) as i64),
                mtime: Time(u64_at(r, 64) as i64),
                ctime: Time(u64_at(r, 72) as i64),
                uid: u32_at(r, 16),
                gid: u32_at(r, 20),
                nlink: u32_at(r, 24),
                rdev: u32_at(r, 28),
                perm: u16_at(r, 10),
                kind,
            },
            target: None,
            file: NONE,
            children: 0..0,
            xattrs,
            n_xattrs: u16_at(r, 14),
        };
        if node.attr.perm > 0o7777 {
            return Err(format!("mode {:o}", node.attr.perm));
        }
        match kind {
            Kind::Dir => {
                let end = a.checked_add(b).filter(|&e| e <= self.h.nodes);
                match end {
                    Some(end) if b == 0 || a > id => node.children = a..end,
                    _ => return Err("a directory's children outside the tree".into()),
                }
            }
            Kind::Symlink => {
                if b == 0 || b as usize > MAX_PATH {
                    return Err("a symlink target's length".into());
                }
                node.target = Some(
                    self.strings_at(a, b as usize)
                        .ok_or("a symlink target outside the strings")?,
                );
            }
            Kind::File => {
                if a >= self.h.files {
                    return Err("a file's data outside the tree".into());
                }
                node.file = a;
            }
            _ => {}
        }
        Ok(node)
    }

    /// The entry `id`, checked (its parent's children checked first).
    pub fn node(&self, id: u32) -> std::io::Result<Node<'_>> {
        if id >= self.h.nodes {
            return Err(self.damaged(format!("entry {id} outside the tree")));
        }
        // Up (without recursion) to an entry whose parent's children were
        // checked, or the root's child; parents come before their
        // children, so the walk ends.
        let mut chain = Vec::new();
        let mut at = id;
        while at != 0 {
            let parent = u32_at(self.node_bytes(at), 0);
            if parent >= at {
                return Err(self.damaged(format!("entry {at} has parent {parent}")));
            }
            chain.push(at);
            if self.dirs_ok.get(parent) {
                break;
            }
            at = parent;
        }
        // Down: each parent (the root, vouched for by the header, or an
        // entry checked just before) must list the entry among its
        // children, whose records its CRC covers.
        for &c in chain.iter().rev() {
            let parent = u32_at(self.node_bytes(c), 0);
            let p = self.decode(parent).map_err(|e| self.damaged(e))?;
            if p.attr.kind != Kind::Dir || !p.children.contains(&c) {
                return Err(self.damaged(format!("entry {c} is not among its parent's")));
            }
            self.check_dir(&p)?;
        }
        self.decode(id).map_err(|e| self.damaged(e))
    }

    /// The children of directory `dir`, checked.
    pub fn children(&self, dir: &Node<'_>) -> std::io::Result<impl Iterator<Item = Node<'_>>> {
        self.check_dir(dir)?;
        // Checked above: they decode.
        Ok(dir.children.clone().filter_map(|c| self.decode(c).ok()))
    }

    /// The child of directory `dir` named `name`.
    pub fn child(&self, dir: &Node<'_>, name: &[u8]) -> std::io::Result<Option<u32>> {
        self.check_dir(dir)?;
        let (mut lo, mut hi) = (dir.children.start, dir.children.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.node_bytes(mid);
            let n = self
                .strings_at(u32_at(r, 4), usize::from(u16_at(r, 8)))
                .unwrap_or_default();
            match n.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(mid)),
            }
        }
        Ok(None)
    }

    /// The entry at `path` (`""` is the root), without following symlinks.
    pub fn lookup(&self, path: &[u8]) -> std::io::Result<Option<u32>> {
        let mut at = self.node(0)?;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            if at.attr.kind != Kind::Dir {
                return Ok(None);
            }
            match self.child(&at, comp)? {
                Some(id) => at = self.decode(id).map_err(|e| self.damaged(e))?,
                None => return Ok(None),
            }
        }
        Ok(Some(at.id))
    }

    /// The full path of entry `id`.
    pub fn path_of(&self, mut id: u32) -> std::io::Result<Vec<u8>> {
        let mut parts = Vec::new();
        while id != 0 {
            let n = self.node(id)?;
            parts.push(n.name);
            id = n.parent;
        }
        parts.reverse();
        Ok(parts.join(&b'/'))
    }

    /// The CRC of file `f`'s record (`f` < the file count).
    fn file_crc(&self, f: u32) -> [u8; 4] {
        let o = self.h.files_off + f as usize * FILE_LEN + 60;
        self.bytes.get()[o..o + 4].try_into().expect("4 bytes")
    }

    /// The data of regular file `f`, checked once.
    pub fn file(&self, f: u32) -> std::io::Result<FileRef<'_>> {
        if f >= self.h.files {
            return Err(self.damaged(format!("file {f} outside the tree")));
        }
        let b = self.bytes.get();
        let o = self.h.files_off + f as usize * FILE_LEN;
        let r = &b[o..o + FILE_LEN];
        let (c0, nc) = (u32_at(r, 40), u32_at(r, 44));
        let (l0, nl) = (u32_at(r, 48), u32_at(r, 52));
        if c0.checked_add(nc).is_none_or(|e| e > self.h.chunks)
            || l0.checked_add(nl).is_none_or(|e| e > self.h.links)
        {
            return Err(self.damaged(format!("file {f}'s chunks or links outside the tree")));
        }
        let chunks = {
            let s = self.h.chunks_off + c0 as usize * CHUNK_LEN;
            &b[s..s + nc as usize * CHUNK_LEN]
        };
        let links = {
            let s = self.h.links_off + l0 as usize * LINK_LEN;
            &b[s..s + nl as usize * LINK_LEN]
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&r[8..40]);
        let file = FileRef {
            size: u64_at(r, 0),
            digest: (r[56] != 0).then_some(Digest(digest)),
            chunks: Chunks(chunks),
            links,
        };
        if !self.files_ok.get(f) {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&r[..60]);
            crc.update(chunks);
            crc.update(links);
            if crc.finalize() != u32_at(r, 60) {
                return Err(self.damaged(format!("the record of file {f}")));
            }
            self.check_file(&file)
                .map_err(|e| self.damaged(format!("file {f}: {e}")))?;
            self.files_ok.set(f);
        }
        Ok(file)
    }

    /// How many chunks of the blob there are (in blob order, [`Tree::order`]).
    pub fn order_len(&self) -> usize {
        self.h.order as usize
    }

    /// The `i`th chunk of the blob by offset: (start, file, chunk index).
    /// Unchecked: whoever fetches it checks that the file's chunk is there.
    pub fn order(&self, i: usize) -> (u64, u32, u32) {
        let o = self.h.order_off + i * ORDER_LEN;
        let b = &self.bytes.get()[o..o + ORDER_LEN];
        (u64_at(b, 0), u32_at(b, 8), u32_at(b, 12))
    }

    /// The first position in blob order whose chunk starts at `from` or
    /// after.
    pub fn order_from(&self, from: u64) -> usize {
        let (mut lo, mut hi) = (0, self.order_len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.order(mid).0 < from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Chunk `c` of file `f` as blob order names it, if the file (checked)
    /// has it and it starts at `start` (a damaged order entry names
    /// something else: skipped).
    pub fn order_chunk(&self, start: u64, f: u32, c: u32) -> Option<Chunk> {
        let file = self.file(f).ok()?;
        let chunk = (c as usize)
            .lt(&file.chunks.len())
            .then(|| file.chunks.get(c as usize))?;
        match chunk.source {
            Source::Blob { start: s, .. } if s == start => Some(chunk),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
