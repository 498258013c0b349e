//! A bounded stress test of the union under hostile concurrency (a few
//! seconds): while many threads rename, exchange, unlink, link, open, read,
//! write, fchmod and fsetxattr through kept fds, readdir and copy up across
//! a small tree, processes of an unprivileged user inside the mount keep
//! swapping directories and removed files with symlinks to a root-only
//! canary directory outside the mount, and read and change what they reach.
//!
//! It asserts that the canary is untouched and never read, that nothing
//! deadlocks (a watchdog dumps the server's thread stacks and fails the
//! test), and that each worker's own directory ends as a model of its
//! operations predicts: every operation's result (value or errno) is
//! checked against the model as it happens, and the whole directory at the
//! end, also after a remount.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::temp_dir;
use crate::mounts::{self, daemons_of, Impl, Mount};
use crate::sys::{self, run_steps_as, Errno, Step};

/// How long the chaos lasts.
const CHAOS: Duration = Duration::from_secs(5);
/// How long the chaos may take before it counts as a deadlock.
const DEADLINE: Duration = Duration::from_secs(90);
const NOBODY: u32 = 65534;
const MARKER: &[u8] = b"CANARY-SECRET";
const WORKERS: usize = 4;

/// A tiny deterministic generator (xorshift), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// What a worker's directory should hold.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// A regular file: the index of its data (hard links share one).
    File(usize),
    Dir(u32),
    /// A symlink: the index of its target (hard links share one inode).
    Symlink(usize),
}

#[derive(Debug, Clone, PartialEq)]
struct FileData {
    data: Vec<u8>,
    mode: u32,
    xattr: Option<Vec<u8>>,
}

/// The model of one worker's directory: names relative to it.
#[derive(Debug, Default)]
struct Model {
    names: BTreeMap<String, Entry>,
    files: Vec<FileData>,
}

impl Model {
    fn new_file(&mut self, data: &[u8], mode: u32) -> usize {
        self.files.push(FileData {
            data: data.to_vec(),
            mode,
            xattr: None,
        });
        self.files.len() - 1
    }

    /// Whether `a` and `b` name one inode (hard links of one file).
    fn same(&self, a: &str, b: &str) -> bool {
        match (self.names.get(a), self.names.get(b)) {
            (Some(Entry::File(x)), Some(Entry::File(y))) => x == y,
            (Some(Entry::Symlink(x)), Some(Entry::Symlink(y))) => x == y,
            _ => false,
        }
    }

    fn is_empty_dir(&self, p: &str) -> bool {
        let prefix = format!("{p}/");
        !self.names.keys().any(|k| k.starts_with(&prefix))
    }

    /// The result rename(from, to) must have, and its effect.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let src = self.names.get(from).cloned().ok_or(Errno::ENOENT)?;
        // POSIX: renaming a name onto another name of the same file does
        // nothing.
        if from == to || self.same(from, to) {
            return Ok(());
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(Errno::EINVAL);
        }
        match (self.names.get(to), &src) {
            (None, _) => {}
            (Some(Entry::Dir(_)), Entry::Dir(_)) if self.is_empty_dir(to) => {}
            (Some(Entry::Dir(_)), Entry::Dir(_)) => return Err(Errno::ENOTEMPTY),
            (Some(Entry::Dir(_)), _) => return Err(Errno::EISDIR),
            (Some(_), Entry::Dir(_)) => return Err(Errno::ENOTDIR),
            (Some(_), _) => {}
        }
        self.names.remove(from);
        self.names.insert(to.to_string(), src);
        Ok(())
    }

    fn exchange(&mut self, a: &str, b: &str) -> Result<(), Errno> {
        let (Some(x), Some(y)) = (self.names.get(a).cloned(), self.names.get(b).cloned()) else {
            return Err(Errno::ENOENT);
        };
        if a != b {
            self.names.insert(a.to_string(), y);
            self.names.insert(b.to_string(), x);
        }
        Ok(())
    }
}

/// Where a path of `Model::names` is, for a worker rooted at `root`.
fn at(root: &Path, p: &str) -> PathBuf {
    root.join(p)
}

fn errno_of<T>(r: &Result<T, Errno>) -> Option<Errno> {
    r.as_ref().err().copied()
}

/// One worker: random operations on its own directory `root` (names among
/// a few at the top and in its lower subdir `e`), each checked against the
/// model, plus writes, chmods and xattrs through fds it keeps open across
/// renames and unlinks of their names. Returns the model and the
/// mismatches found.
fn worker(root: PathBuf, seed: u64, until: Instant) -> (Model, Vec<String>, u64) {
    let mut m = Model::default();
    // The lower layer's contents of the worker's dir (see `lay_out`).
    for (name, data) in [
        ("a", "a lower"),
        ("b", "b lower"),
        ("e/x", "x lower"),
        ("e/y", "y lower"),
    ] {
        let id = m.new_file(data.as_bytes(), 0o644);
        m.names.insert(name.to_string(), Entry::File(id));
    }
    m.names.insert("e".to_string(), Entry::Dir(0o755));
    let names = ["a", "b", "c", "d", "e/x", "e/y", "e/z"];
    let tops = ["a", "b", "c", "d"];
    let mut rng = Rng(seed | 1);
    let mut bad = Vec::new();
    let mut kept: Vec<(std::os::fd::OwnedFd, usize)> = Vec::new();
    let mut ops = 0u64;
    let check = |op: String, got: Option<Errno>, want: Option<Errno>, bad: &mut Vec<String>| {
        if got != want {
            bad.push(format!("{op}: got {got:?}, model says {want:?}"));
        }
    };
    while Instant::now() < until && bad.len() < 20 {
        ops += 1;
        match rng.below(14) {
            0 => {
                let p = rng.pick(&names);
                let data = format!("new {}", rng.next() % 1000);
                let r = sys::open(
                    &at(&root, p),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o644,
                )
                .and_then(|fd| sys::write(&fd, data.as_bytes()));
                let want = if m.names.contains_key(p) {
                    Some(Errno::EEXIST)
                } else {
                    let id = m.new_file(data.as_bytes(), 0o644);
                    m.names.insert(p.to_string(), Entry::File(id));
                    None
                };
                check(format!("create {p}"), errno_of(&r), want, &mut bad);
            }
            1 => {
                let p = rng.pick(&names);
                if matches!(m.names.get(p), Some(Entry::Symlink(_))) {
                    continue;
                }
                let data = format!("+{}", rng.next() % 100);
                let r = sys::open(&at(&root, p), libc::O_WRONLY | libc::O_APPEND, 0)
                    .and_then(|fd| sys::write(&fd, data.as_bytes()));
                let want = match m.names.get(p) {
                    None => Some(Errno::ENOENT),
                    Some(Entry::Dir(_)) => Some(Errno::EISDIR),
                    Some(Entry::File(id)) => {
                        m.files[*id].data.extend_from_slice(data.as_bytes());
                        None
                    }
                    Some(Entry::Symlink(_)) => unreachable!(),
                };
                check(format!("append {p}"), errno_of(&r), want, &mut bad);
            }
            2 => {
                let p = rng.pick(&names);
                if matches!(m.names.get(p), Some(Entry::Symlink(_))) {
                    continue;
                }
                let len = rng.below(6);
                let r = sys::truncate(&at(&root, p), len as i64);
                let want = match m.names.get(p) {
                    None => Some(Errno::ENOENT),
                    Some(Entry::Dir(_)) => Some(Errno::EISDIR),
                    Some(Entry::File(id)) => {
                        m.files[*id].data.resize(len, 0);
                        None
                    }
                    Some(Entry::Symlink(_)) => unreachable!(),
                };
                check(format!("truncate {p} {len}"), errno_of(&r), want, &mut bad);
            }
            3 => {
                let p = rng.pick(&names);
                if matches!(m.names.get(p), Some(Entry::Symlink(_))) {
                    continue;
                }
                let r = std::fs::read(at(&root, p));
                match (m.names.get(p), r) {
                    (Some(Entry::File(id)), Ok(data)) if data == m.files[*id].data => {}
                    (None, Err(_)) | (Some(Entry::Dir(_)), Err(_)) => {}
                    (want, got) => bad.push(format!("read {p}: got {got:?}, model has {want:?}")),
                }
            }
            4 => {
                let p = rng.pick(&names);
                let r = sys::unlink(&at(&root, p));
                let want = match m.names.get(p) {
                    None => Some(Errno::ENOENT),
                    Some(Entry::Dir(_)) => Some(Errno::EISDIR),
                    Some(_) => {
                        m.names.remove(p);
                        None
                    }
                };
                check(format!("unlink {p}"), errno_of(&r), want, &mut bad);
            }
            5 => {
                let p = rng.pick(&tops);
                let r = sys::mkdir(&at(&root, p), 0o755);
                let want = if m.names.contains_key(p) {
                    Some(Errno::EEXIST)
                } else {
                    m.names.insert(p.to_string(), Entry::Dir(0o755));
                    None
                };
                check(format!("mkdir {p}"), errno_of(&r), want, &mut bad);
            }
            6 => {
                let p = rng.pick(&tops);
                let r = sys::rmdir(&at(&root, p));
                let want = match m.names.get(p) {
                    None => Some(Errno::ENOENT),
                    Some(Entry::Dir(_)) => {
                        m.names.remove(p);
                        None
                    }
                    Some(_) => Some(Errno::ENOTDIR),
                };
                check(format!("rmdir {p}"), errno_of(&r), want, &mut bad);
            }
            7 | 8 => {
                let (a, b) = (rng.pick(&names), rng.pick(&names));
                // A directory moves only between top names (into e/ it
                // would need the model to track its contents' paths too).
                if matches!(m.names.get(a), Some(Entry::Dir(_))) && b.contains('/') {
                    continue;
                }
                let r = sys::rename(&at(&root, a), &at(&root, b));
                let want = errno_of(&m.rename(a, b));
                check(format!("rename {a} {b}"), errno_of(&r), want, &mut bad);
            }
            9 => {
                let (a, b) = (rng.pick(&names), rng.pick(&names));
                let dir_moves = |x: &str, y: &str| {
                    matches!(m.names.get(x), Some(Entry::Dir(_))) && y.contains('/')
                };
                if dir_moves(a, b) || dir_moves(b, a) {
                    continue;
                }
                let r = sys::renameat2(&at(&root, a), &at(&root, b), libc::RENAME_EXCHANGE);
                let want = errno_of(&m.exchange(a, b));
                check(format!("exchange {a} {b}"), errno_of(&r), want, &mut bad);
            }
            10 => {
                let (a, b) = (rng.pick(&names), rng.pick(&names));
                let r = sys::link(&at(&root, a), &at(&root, b));
                let want = match (m.names.get(a).cloned(), m.names.contains_key(b)) {
                    (None, _) => Some(Errno::ENOENT),
                    (Some(_), true) => Some(Errno::EEXIST),
                    (Some(Entry::Dir(_)), false) => Some(Errno::EPERM),
                    (Some(e), false) => {
                        m.names.insert(b.to_string(), e);
                        None
                    }
                };
                check(format!("link {a} {b}"), errno_of(&r), want, &mut bad);
            }
            11 => {
                let p = rng.pick(&names);
                let target = format!("t{}", rng.next() % 100);
                let r = sys::symlink(Path::new(&target), &at(&root, p));
                let want = if m.names.contains_key(p) {
                    Some(Errno::EEXIST)
                } else {
                    let id = m.new_file(target.as_bytes(), 0o777);
                    m.names.insert(p.to_string(), Entry::Symlink(id));
                    None
                };
                check(format!("symlink {p}"), errno_of(&r), want, &mut bad);
            }
            12 => {
                let p = rng.pick(&names);
                let mode = [0o600, 0o640, 0o644, 0o755][rng.below(4)];
                if matches!(m.names.get(p), Some(Entry::Symlink(_))) {
                    continue;
                }
                let r = sys::chmod(&at(&root, p), mode);
                let want = match m.names.get(p).cloned() {
                    None => Some(Errno::ENOENT),
                    Some(Entry::File(id)) => {
                        m.files[id].mode = mode;
                        None
                    }
                    Some(Entry::Dir(_)) => {
                        m.names.insert(p.to_string(), Entry::Dir(mode));
                        None
                    }
                    Some(Entry::Symlink(_)) => unreachable!(),
                };
                check(format!("chmod {p} {mode:o}"), errno_of(&r), want, &mut bad);
            }
            _ => {
                // Kept fds: open one, or act through one whose name may be
                // gone or elsewhere by now.
                if kept.len() < 4 && rng.below(2) == 0 {
                    let p = rng.pick(&names);
                    if let Some(Entry::File(id)) = m.names.get(p).cloned() {
                        match sys::open(&at(&root, p), libc::O_RDWR, 0) {
                            Ok(fd) => kept.push((fd, id)),
                            Err(e) => bad.push(format!("open {p} O_RDWR: {e:?}")),
                        }
                    }
                    continue;
                }
                if kept.is_empty() {
                    continue;
                }
                let k = rng.below(kept.len());
                let id = kept[k].1;
                match rng.below(4) {
                    0 => {
                        let data = format!("w{}", rng.next() % 10);
                        let r = sys::pwrite(&kept[k].0, data.as_bytes(), 0);
                        let f = &mut m.files[id].data;
                        if f.len() < data.len() {
                            f.resize(data.len(), 0);
                        }
                        f[..data.len()].copy_from_slice(data.as_bytes());
                        check("pwrite kept".into(), errno_of(&r), None, &mut bad);
                    }
                    1 => {
                        let mode = [0o600, 0o644][rng.below(2)];
                        let r = sys::fchmod(&kept[k].0, mode);
                        m.files[id].mode = mode;
                        check("fchmod kept".into(), errno_of(&r), None, &mut bad);
                    }
                    2 => {
                        let v = format!("v{}", rng.next() % 10).into_bytes();
                        let r = sys::fsetxattr(&kept[k].0, "user.k", &v);
                        m.files[id].xattr = Some(v);
                        check("fsetxattr kept".into(), errno_of(&r), None, &mut bad);
                    }
                    _ => {
                        kept.swap_remove(k);
                    }
                }
            }
        }
        // Now and then the whole directory, as readdir sees it.
        if rng.below(16) == 0 {
            let mut got: Vec<String> = std::fs::read_dir(&root)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            got.sort();
            let want: Vec<String> = m
                .names
                .keys()
                .filter(|k| !k.contains('/'))
                .cloned()
                .collect();
            if got != want {
                bad.push(format!("readdir: got {got:?}, model has {want:?}"));
            }
        }
    }
    (m, bad, ops)
}

/// The worker's directory against its model: every name, its kind, data,
/// mode, xattr and symlink target, and no other names.
fn compare(root: &Path, m: &Model, when: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for dir in ["", "e"] {
        let mut got: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                if dir.is_empty() {
                    n
                } else {
                    format!("{dir}/{n}")
                }
            })
            .collect();
        got.sort();
        let want: Vec<String> = m
            .names
            .keys()
            .filter(|k| match dir {
                "" => !k.contains('/'),
                d => k.starts_with(&format!("{d}/")),
            })
            .cloned()
            .collect();
        if got != want {
            bad.push(format!(
                "{when}: {}/{dir}: names {got:?}, model {want:?}",
                root.display()
            ));
        }
    }
    for (p, e) in &m.names {
        let path = root.join(p);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            bad.push(format!("{when}: {p} missing"));
            continue;
        };
        match e {
            Entry::File(id) => {
                let f = &m.files[*id];
                let data = std::fs::read(&path).unwrap_or_default();
                if !meta.is_file() || data != f.data || meta.mode() & 0o7777 != f.mode {
                    bad.push(format!(
                        "{when}: {p}: {:?} mode {:o} data {:?}; model mode {:o} data {:?}",
                        meta.file_type(),
                        meta.mode() & 0o7777,
                        String::from_utf8_lossy(&data),
                        f.mode,
                        String::from_utf8_lossy(&f.data)
                    ));
                }
                let x = sys::lgetxattr(&path, "user.k").ok();
                if x != f.xattr {
                    bad.push(format!("{when}: {p}: xattr {x:?}, model {:?}", f.xattr));
                }
            }
            Entry::Dir(mode) => {
                if !meta.is_dir() || meta.mode() & 0o7777 != *mode {
                    bad.push(format!("{when}: {p}: not a dir of mode {mode:o}: {meta:?}"));
                }
            }
            Entry::Symlink(id) => {
                let t = String::from_utf8_lossy(&m.files[*id].data).into_owned();
                match std::fs::read_link(&path) {
                    Ok(got) if got == Path::new(&t) => {}
                    got => bad.push(format!("{when}: {p}: link {got:?}, model {t}")),
                }
            }
        }
    }
    bad
}

/// Chaos on shared dirs by root threads: renames and exchanges of lower
/// dirs and files across them, copy-ups, reads, listings. Results are not
/// checked; the point is the contention.
fn shared_chaos(root: PathBuf, seed: u64, until: Instant) -> u64 {
    let dirs = ["s0", "s1", "s2", "s3"];
    let files = ["f0", "f1", "f2", "f3", "n/g"];
    let mut rng = Rng(seed | 1);
    let mut ops = 0;
    let mut kept = Vec::new();
    while Instant::now() < until {
        ops += 1;
        let d = root.join(rng.pick(&dirs));
        let f = d.join(rng.pick(&files));
        match rng.below(8) {
            0 => {
                let _ = sys::renameat2(&d, &root.join(rng.pick(&dirs)), libc::RENAME_EXCHANGE);
            }
            1 => {
                let _ = sys::rename(&f, &root.join(rng.pick(&dirs)).join(rng.pick(&files)));
            }
            2 => {
                if let Ok(fd) = sys::open(&f, libc::O_RDWR, 0) {
                    let _ = sys::pwrite(&fd, b"x", 0);
                    if kept.len() < 8 {
                        kept.push(fd);
                    }
                }
            }
            3 => {
                let _ = std::fs::read(&f);
            }
            4 => {
                let _ = std::fs::read_dir(&d).map(|r| r.count());
            }
            5 => {
                let _ = sys::unlink(&f);
                let _ = std::fs::write(&f, b"again");
            }
            6 => {
                let _ = sys::link(&f, &root.join(rng.pick(&dirs)).join(rng.pick(&files)));
            }
            _ => {
                if let Some(fd) = kept.pop() {
                    let _ = sys::fchmod(&fd, 0o600);
                    let _ = sys::fsetxattr(&fd, "user.s", b"v");
                }
            }
        }
    }
    ops
}

/// The unprivileged user's attacks, each a loop of syscalls in a child
/// process until `for_` is up (see [`run_steps_as`]).
fn attacks(pubdir: &Path, canary: &Path) -> Vec<Vec<Step>> {
    let p = |rel: &str| Step::path(&pubdir.join(rel));
    let secret = Step::path(&canary.join("secret"));
    let evil = || Step::name("user.evil");
    vec![
        // Swaps a directory of its own with a symlink to the canary dir.
        vec![Step::Exchange(p("a"), p("s"))],
        // Reads and changes a file inside that directory meanwhile.
        vec![
            Step::ReadMarker(p("a/secret"), MARKER.to_vec()),
            Step::Open(p("a/secret"), libc::O_RDWR, 0),
            Step::Fchmod(1, 0o777),
            Step::Fsetxattr(1, evil(), b"1".to_vec()),
            Step::ReadMarker(p("s/secret"), MARKER.to_vec()),
        ],
        // Keeps fds of a file, puts a symlink to the canary file in its
        // place, and changes the file through the fds.
        vec![
            Step::Open(p("c"), libc::O_CREAT | libc::O_RDWR, 0o600),
            Step::OpenPath(p("c")),
            Step::Unlink(p("c")),
            Step::Symlink(secret.clone(), p("c")),
            Step::Fchmod(0, 0o777),
            Step::ProcChmod(1, 0o666),
            Step::Fsetxattr(0, evil(), b"1".to_vec()),
            Step::Ftruncate(0, 0),
            Step::Unlink(p("c")),
        ],
        // The same with the file's directory replaced by a symlink to the
        // canary dir.
        vec![
            Step::Mkdir(p("d"), 0o777),
            Step::Open(p("d/secret"), libc::O_CREAT | libc::O_RDWR, 0o600),
            Step::OpenPath(p("d/secret")),
            Step::Unlink(p("d/secret")),
            Step::Rmdir(p("d")),
            Step::Symlink(Step::path(canary), p("d")),
            Step::Fchmod(1, 0o777),
            Step::ProcChmod(2, 0o666),
            Step::Fsetxattr(1, evil(), b"1".to_vec()),
            Step::Ftruncate(1, 0),
            Step::Unlink(p("d")),
        ],
    ]
}

/// Dumps what every thread of the servers of `mnt` is waiting on: the
/// kernel stack of each, and with gdb at hand the userspace stacks too.
pub fn dump_stacks(mnt: &Path) {
    for pid in daemons_of(mnt) {
        eprintln!("=== server {pid} of {}: thread stacks", mnt.display());
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
                eprintln!(
                    "--- task {} ({}) waiting in {}\n{}",
                    t.file_name().to_string_lossy(),
                    read("comm").trim(),
                    read("wchan"),
                    read("stack")
                );
            }
        }
        let gdb = std::process::Command::new("timeout")
            .args([
                "20",
                "gdb",
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "thread apply all bt",
            ])
            .output();
        if let Ok(out) = gdb {
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

fn lay_out(base: &Path, canary: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let (lower, upper, work, mnt) = (
        base.join("lower"),
        base.join("upper"),
        base.join("work"),
        base.join("mnt"),
    );
    for d in [&lower, &upper, &work, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 0..WORKERS {
        let w = lower.join(format!("w{i}"));
        std::fs::create_dir_all(w.join("e")).unwrap();
        for (name, data) in [
            ("a", "a lower"),
            ("b", "b lower"),
            ("e/x", "x lower"),
            ("e/y", "y lower"),
        ] {
            std::fs::write(w.join(name), data).unwrap();
        }
    }
    for s in 0..4 {
        let d = lower.join("shared").join(format!("s{s}"));
        std::fs::create_dir_all(d.join("n")).unwrap();
        for f in ["f0", "f1", "f2", "f3", "n/g"] {
            std::fs::write(d.join(f), format!("{s}/{f}")).unwrap();
        }
    }
    let pubdir = lower.join("pub");
    std::fs::create_dir(&pubdir).unwrap();
    std::fs::set_permissions(&pubdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir(canary).unwrap();
    let mut secret = MARKER.to_vec();
    secret.extend_from_slice(b" root only");
    std::fs::write(canary.join("secret"), &secret).unwrap();
    std::fs::set_permissions(
        canary.join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(canary, std::fs::Permissions::from_mode(0o755)).unwrap();
    (lower, upper, work, mnt)
}

/// Panics if anything in the canary dir changed.
fn assert_canary_untouched(canary: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(canary)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["secret"], "files appeared in the canary dir");
    let p = canary.join("secret");
    let meta = std::fs::symlink_metadata(&p).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "the canary's mode changed through the mount"
    );
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "the canary changed owner");
    assert!(
        std::fs::read(&p).unwrap().starts_with(MARKER),
        "the canary was truncated"
    );
    assert!(
        sys::llistxattr(&p).unwrap().is_empty(),
        "the canary got xattrs"
    );
    let dmeta = std::fs::metadata(canary).unwrap();
    assert_eq!(
        dmeta.mode() & 0o7777,
        0o755,
        "the canary dir's mode changed"
    );
}

#[test]
fn hostile_concurrency_neither_escapes_nor_deadlocks_nor_loses_changes() {
    mounts::require_privileges();
    let tmp = temp_dir();
    let base = tmp.path();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let canary = base.join("canary");
    let (lower, upper, work, mnt) = lay_out(base, &canary);
    let mut m = Mount::subject_with(
        Impl::Rcfs,
        std::slice::from_ref(&lower),
        Some((&upper, &work)),
        &mnt,
        true,
    );
    // The attackers' own setup, as the user: a dir with a file of theirs
    // and a symlink to the canary dir beside it.
    let pubdir = mnt.join("pub");
    let setup = run_steps_as(
        NOBODY,
        &[
            Step::Mkdir(Step::path(&pubdir.join("a")), 0o777),
            Step::Open(
                Step::path(&pubdir.join("a/secret")),
                libc::O_CREAT | libc::O_RDWR,
                0o644,
            ),
            Step::Symlink(Step::path(&canary), Step::path(&pubdir.join("s"))),
        ],
        None,
    );
    assert!(
        setup.results.iter().all(|r| *r == 0),
        "attacker setup: {:?}",
        setup.results
    );

    let until = Instant::now() + CHAOS;
    let (done_tx, done_rx) = mpsc::channel::<&'static str>();
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let (root, tx) = (mnt.join(format!("w{i}")), done_tx.clone());
        workers.push(std::thread::spawn(move || {
            let r = worker(root, 0x9e37_79b9 + i as u64 * 7919, until);
            let _ = tx.send("worker");
            r
        }));
    }
    let mut chaos = Vec::new();
    for i in 0..2 {
        let (root, tx) = (mnt.join("shared"), done_tx.clone());
        chaos.push(std::thread::spawn(move || {
            let ops = shared_chaos(root, 0x5eed + i, until);
            let _ = tx.send("chaos");
            ops
        }));
    }
    let mut attackers = Vec::new();
    for steps in attacks(&pubdir, &canary) {
        let tx = done_tx.clone();
        attackers.push(std::thread::spawn(move || {
            let r = run_steps_as(NOBODY, &steps, Some(CHAOS));
            let _ = tx.send("attacker");
            r
        }));
    }
    drop(done_tx);
    let total = WORKERS + 2 + 4;
    let deadline = Instant::now() + DEADLINE;
    for n in 0..total {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            dump_stacks(&mnt);
            panic!("deadlock: {n} of {total} threads finished within {DEADLINE:?}; stacks above");
        }
    }
    let mut models = Vec::new();
    let mut mismatches = Vec::new();
    let mut ops = 0;
    for w in workers {
        let (model, bad, n) = w.join().unwrap();
        ops += n;
        mismatches.extend(bad);
        models.push(model);
    }
    let chaos_ops: u64 = chaos.into_iter().map(|c| c.join().unwrap()).sum();
    let mut hits = 0;
    let mut passes = 0;
    for a in attackers {
        let r = a.join().unwrap();
        hits += r.marker_hits;
        passes += r.passes;
    }
    eprintln!(
        "stress: {ops} checked operations, {chaos_ops} shared ones, {passes} attack passes in {CHAOS:?}"
    );
    assert_canary_untouched(&canary);
    assert_eq!(
        hits, 0,
        "an unprivileged user read the root-only canary through the mount"
    );
    assert!(
        mismatches.is_empty(),
        "results differ from the model:\n{}",
        mismatches.join("\n")
    );
    for (i, model) in models.iter().enumerate() {
        let bad = compare(&mnt.join(format!("w{i}")), model, "after the chaos");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
    // What is on disk is what the model says, seen by a new server.
    m.unmount().expect_ok("rcfs umount");
    std::mem::forget(m);
    m = Mount::subject_with(Impl::Rcfs, &[lower], Some((&upper, &work)), &mnt, true);
    for (i, model) in models.iter().enumerate() {
        let bad = compare(&mnt.join(format!("w{i}")), model, "after a remount");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
    assert_canary_untouched(&canary);
    drop(m);
}

/// The model itself, checked against kernel overlayfs: the same operations
/// on the same layers must give what it predicts.
#[test]
fn the_stress_model_agrees_with_kernel_overlayfs() {
    mounts::require_privileges();
    let tmp = temp_dir();
    let base = tmp.path();
    let (lower, upper, work, mnt) = lay_out(base, &base.join("canary"));
    let _m = Mount::kernel(&[lower], Some((&upper, &work)), &mnt);
    for i in 0..WORKERS {
        let until = Instant::now() + Duration::from_millis(500);
        let root = mnt.join(format!("w{i}"));
        let (model, bad, _) = worker(root.clone(), 0x9e37_79b9 + i as u64 * 7919, until);
        assert!(bad.is_empty(), "kernel overlayfs: {}", bad.join("\n"));
        let bad = compare(&root, &model, "kernel overlayfs");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
