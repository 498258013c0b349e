//! A full picture of a merged tree, for comparing two mounts.
//!
//! [`snapshot`] walks a tree with plain readdir/lstat/readlink/read/xattr
//! calls and records for every path what a user could observe: type, mode,
//! owner, size, content, symlink target, link count and mtime of non-dirs,
//! and xattrs. It also records problems a single walk can see on its own:
//! duplicate names in one readdir, and a readdir `d_type` or `d_ino` that
//! disagrees with `lstat`.
//!
//! Not compared, on purpose: inode numbers (each fs numbers its own), dir
//! sizes and link counts and mtimes (they depend on the upper fs's layout and
//! on kernel overlayfs's copy-up of parents, not on anything a union promises),
//! atimes and ctimes, `security.*` xattrs (LSM labels).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

use crate::sys;

/// Content of a regular file: bytes if small, else length and digest.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    Digest { len: usize, hash: u64 },
}

impl Content {
    pub fn of(data: &[u8]) -> Content {
        if data.len() <= 200 {
            Content::Bytes(data.to_vec())
        } else {
            Content::Digest {
                len: data.len(),
                hash: digest(data),
            }
        }
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Content::Digest { len, hash } => write!(f, "<{len} bytes, hash {hash:016x}>"),
        }
    }
}

/// Permission bits with setuid/setgid/sticky (`st_mode & 07777`), shown in octal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0o{:o}", self.0)
    }
}

/// A 64-bit digest of `data`, word at a time (fast enough unoptimised for
/// 64 MiB files; it only has to tell different contents apart in tests).
fn digest(data: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ data.len() as u64;
    let mix = |h: u64, i: usize, w: u64| (h ^ w ^ i as u64).wrapping_mul(PRIME).rotate_left(29);
    // SAFETY: every bit pattern is a valid u64; align_to only reinterprets
    // the aligned middle of the slice.
    let (head, words, _) = unsafe { data.align_to::<u64>() };
    let tail = &data[data.len() - data.len() % 8..];
    if head.is_empty() {
        // Fast path (heap buffers are aligned): whole words in place.
        for (i, w) in words.iter().enumerate().take(data.len() / 8) {
            h = mix(h, i, *w);
        }
    } else {
        for (i, c) in data.chunks_exact(8).enumerate() {
            h = mix(h, i, u64::from_ne_bytes(c.try_into().unwrap()));
        }
    }
    for b in tail {
        h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
    }
    h
}

/// File type as lstat reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev(u32, u32),
    BlockDev(u32, u32),
}

impl FileKind {
    pub fn of(st: &libc::stat) -> FileKind {
        let (maj, min) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDev(maj, min),
            libc::S_IFBLK => FileKind::BlockDev(maj, min),
            other => panic!("unknown file type {other:o}"),
        }
    }

    fn matches_dtype(self, ft: std::fs::FileType) -> bool {
        use std::os::unix::fs::FileTypeExt;
        match self {
            FileKind::File => ft.is_file(),
            FileKind::Dir => ft.is_dir(),
            FileKind::Symlink => ft.is_symlink(),
            FileKind::Fifo => ft.is_fifo(),
            FileKind::Socket => ft.is_socket(),
            FileKind::CharDev(..) => ft.is_char_device(),
            FileKind::BlockDev(..) => ft.is_block_device(),
        }
    }
}

/// A time as compared between two mounts made at different moments: exact
/// if it is a fixed time a layer or a case set, `"recent"` if it is "now".
pub fn time_str(sec: i64, nsec: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - sec).abs() < 3600 {
        "recent".into()
    } else {
        format!("{sec}.{nsec:09}")
    }
}

/// What a user can observe of one path of a merged tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: FileKind,
    pub mode: Mode,
    pub uid: u32,
    pub gid: u32,
    /// `st_size`, not for dirs.
    pub size: Option<i64>,
    /// `st_nlink`, not for dirs.
    pub nlink: Option<u64>,
    /// `st_mtime` via [`time_str`], not for dirs.
    pub mtime: Option<String>,
    pub content: Option<Content>,
    pub target: Option<PathBuf>,
    /// All xattrs except `security.*`, by name.
    pub xattrs: BTreeMap<String, Content>,
}

/// A merged tree: entries by path relative to the root ("" = the root).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Things wrong within this one tree (duplicate names, d_type, d_ino).
    pub problems: Vec<String>,
}

pub fn entry(path: &Path) -> Result<Entry, sys::Errno> {
    let st = sys::lstat(path)?;
    let kind = FileKind::of(&st);
    let is_dir = kind == FileKind::Dir;
    let content = match kind {
        FileKind::File => {
            Some(Content::of(&std::fs::read(path).map_err(|e| {
                sys::Errno::from_raw(e.raw_os_error().unwrap_or(0))
            })?))
        }
        _ => None,
    };
    let target = match kind {
        FileKind::Symlink => Some(sys::readlink(path)?),
        _ => None,
    };
    let mut xattrs = BTreeMap::new();
    match sys::llistxattr(path) {
        Ok(names) => {
            for name in names.into_iter().filter(|n| !n.starts_with("security.")) {
                let value = sys::lgetxattr(path, &name).map(|v| Content::of(&v));
                xattrs.insert(
                    name,
                    value.unwrap_or_else(|e| {
                        Content::Bytes(format!("<getxattr: {e:?}>").into_bytes())
                    }),
                );
            }
        }
        // Some filesystems have no xattrs for some file types.
        Err(sys::Errno::ENOTSUP) => {}
        Err(e) => return Err(e),
    }
    Ok(Entry {
        kind,
        mode: Mode(st.st_mode & 0o7777),
        uid: st.st_uid,
        gid: st.st_gid,
        size: (!is_dir).then_some(st.st_size),
        nlink: (!is_dir).then_some(st.st_nlink),
        mtime: (!is_dir).then(|| time_str(st.st_mtime, st.st_mtime_nsec)),
        content,
        target,
        xattrs,
    })
}

/// Walks the tree at `root`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut snap = Snapshot::default();
    walk(root, Path::new(""), &mut snap);
    snap
}

fn walk(root: &Path, rel: &Path, snap: &mut Snapshot) {
    let full = root.join(rel);
    let e = match entry(&full) {
        Ok(e) => e,
        Err(err) => {
            snap.problems.push(format!("{}: {err:?}", rel.display()));
            return;
        }
    };
    let is_dir = e.kind == FileKind::Dir;
    snap.entries.insert(rel.to_path_buf(), e);
    if !is_dir {
        return;
    }
    let rd = match std::fs::read_dir(&full) {
        Ok(rd) => rd,
        Err(err) => {
            snap.problems
                .push(format!("readdir {}: {err}", rel.display()));
            return;
        }
    };
    let mut seen = BTreeMap::new();
    for de in rd {
        let de = match de {
            Ok(de) => de,
            Err(err) => {
                snap.problems
                    .push(format!("readdir {}: {err}", rel.display()));
                break;
            }
        };
        let name = de.file_name();
        *seen.entry(name.clone()).or_insert(0) += 1;
        if seen[&name] > 1 {
            snap.problems.push(format!(
                "readdir {}: duplicate name {name:?}",
                rel.display()
            ));
            continue;
        }
        let child = rel.join(&name);
        if let (Ok(st), Ok(ft)) = (sys::lstat(&root.join(&child)), de.file_type()) {
            if !FileKind::of(&st).matches_dtype(ft) {
                snap.problems.push(format!(
                    "{}: readdir d_type {ft:?} but lstat says {:?}",
                    child.display(),
                    FileKind::of(&st)
                ));
            }
            if de.ino() != st.st_ino {
                snap.problems.push(format!(
                    "{}: readdir d_ino {} but lstat st_ino {}",
                    child.display(),
                    de.ino(),
                    st.st_ino
                ));
            }
        }
        walk(root, &child, snap);
    }
}

/// Differences between two snapshots ("" if none), `a` and `b` named.
pub fn diff(a_name: &str, a: &Snapshot, b_name: &str, b: &Snapshot) -> String {
    let mut out = String::new();
    for p in &a.problems {
        out.push_str(&format!("  {a_name} problem: {p}\n"));
    }
    for p in &b.problems {
        out.push_str(&format!("  {b_name} problem: {p}\n"));
    }
    let keys: std::collections::BTreeSet<&PathBuf> =
        a.entries.keys().chain(b.entries.keys()).collect();
    for k in keys {
        match (a.entries.get(k), b.entries.get(k)) {
            (Some(x), None) => {
                out.push_str(&format!("  /{}: only in {a_name}: {x:?}\n", k.display()))
            }
            (None, Some(y)) => {
                out.push_str(&format!("  /{}: only in {b_name}: {y:?}\n", k.display()))
            }
            (Some(x), Some(y)) if x != y => {
                out.push_str(&format!(
                    "  /{}:\n    {a_name}: {x:?}\n    {b_name}: {y:?}\n",
                    k.display()
                ));
            }
            _ => {}
        }
    }
    out
}
