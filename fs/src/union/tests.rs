//! Unit tests of the union, on host directory layers, without a mount.

use super::*;
use crate::layer::{self, DirLayer, LowerFile};
use crate::{flush, whiteout};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// The parent dir of `p`, open, and `p`'s name (for the xattr helpers).
fn parent_fd(p: &Path) -> (OwnedFd, OsString) {
    let dir = crate::sys::open_at(
        nix::fcntl::AT_FDCWD,
        p.parent().unwrap().as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .unwrap();
    (dir, p.file_name().unwrap().to_owned())
}

fn xget(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (d, n) = parent_fd(p);
    crate::sys::xattr::get(d.as_fd(), &n, libc::AT_SYMLINK_NOFOLLOW, OsStr::new(name)).unwrap()
}

fn xset(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (d, n) = parent_fd(p);
    crate::sys::xattr::set(
        d.as_fd(),
        &n,
        libc::AT_SYMLINK_NOFOLLOW,
        OsStr::new(name),
        value,
        0,
    )
}

/// Layers under a temp dir: `l0` is the top lower layer.
struct Fx {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Fx {
    fn new(layers: usize) -> Fx {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        for i in 0..layers {
            fs::create_dir(root.join(format!("l{i}"))).unwrap();
        }
        fs::create_dir(root.join("upper")).unwrap();
        fs::create_dir(root.join("work")).unwrap();
        Fx { _t: t, root }
    }
    fn put(&self, rel: &str, data: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    fn union(&self, layers: usize, metacopy: bool) -> Union {
        let lowers: Vec<Arc<dyn Layer>> = (0..layers)
            .map(|i| {
                Arc::new(DirLayer::new(&self.root.join(format!("l{i}"))).unwrap()) as Arc<dyn Layer>
            })
            .collect();
        Union::new(Config {
            lowers,
            upper: Some(UpperConfig {
                upper: self.root.join("upper"),
                work: self.root.join("work"),
            }),
            metacopy,
            fsync: true,
        })
        .unwrap()
    }
    fn upper(&self, rel: &str) -> PathBuf {
        self.root.join("upper").join(rel)
    }
}

const ME: Caller = Caller { uid: 0, gid: 0 };

/// The listing's names, sorted by name (readdir order is by cookie).
fn names(u: &Union, ino: u64) -> Vec<String> {
    let list = u.list_dir(ino).unwrap();
    assert!(
        list.windows(2).all(|w| w[0].cookie < w[1].cookie),
        "listing must be in cookie order"
    );
    let mut names: Vec<String> = list
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn path_ino(u: &Union, path: &str) -> u64 {
    let mut ino = ROOT_INO;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = u.lookup(ino, OsStr::new(c)).unwrap().ino;
    }
    ino
}

fn read_all(u: &Union, ino: u64) -> String {
    let f = u.open(ino, libc::O_RDONLY, false).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn merges_layers_top_first_with_whiteouts_and_opaque_dirs() {
    let fx = Fx::new(3);
    fx.put("l2/a", "a2");
    fx.put("l2/b", "b2");
    fx.put("l2/d/old", "old");
    fx.put("l2/e/keep", "keep");
    fx.put("l1/a", "a1");
    fx.put("l1/.wh.b", "");
    fx.put("l1/d/.wh..wh..opq", "");
    fx.put("l1/d/new", "new");
    fx.put("l0/e/more", "more");
    fx.put("l0/.wh..wh..opq-not-a-marker", "x");
    let u = fx.union(3, true);
    // A `.wh.`-prefixed name is a whiteout of the rest, never shown.
    assert_eq!(names(&u, ROOT_INO), vec!["a", "d", "e"]);
    assert_eq!(read_all(&u, path_ino(&u, "a")), "a1");
    assert_eq!(names(&u, path_ino(&u, "d")), vec!["new"]);
    assert_eq!(names(&u, path_ino(&u, "e")), vec!["keep", "more"]);
}

#[test]
fn overlay_xattr_opaque_dir() {
    let fx = Fx::new(2);
    fx.put("l1/d/hidden", "h");
    fx.put("l0/d/shown", "s");
    let d = fx.root.join("l0/d");
    if xset(&d, "user.overlay.opaque", b"y").is_err() {
        panic!("the test filesystem must support user xattrs");
    }
    let u = fx.union(2, true);
    assert_eq!(names(&u, path_ino(&u, "d")), vec!["shown"]);
    // The marker xattr is bookkeeping, not shown.
    assert!(u.listxattr(path_ino(&u, "d")).unwrap().is_empty());
}

#[test]
fn hard_links_in_a_layer_share_an_inode() {
    let fx = Fx::new(1);
    fx.put("l0/a/f", "data");
    fs::create_dir_all(fx.root.join("l0/b")).unwrap();
    fs::hard_link(fx.root.join("l0/a/f"), fx.root.join("l0/b/g")).unwrap();
    let u = fx.union(1, true);
    let f = u.lookup(path_ino(&u, "a"), OsStr::new("f")).unwrap();
    let g = u.lookup(path_ino(&u, "b"), OsStr::new("g")).unwrap();
    assert_eq!(f.ino, g.ino);
    assert_eq!(f.attr.nlink, 2);
    // Writing through one name changes what the other shows.
    let h = u
        .open(f.ino, libc::O_WRONLY | libc::O_APPEND, false)
        .unwrap();
    u.write(&h, b"+", 4).unwrap();
    assert_eq!(read_all(&u, g.ino), "data+");
    assert_eq!(fs::read_to_string(fx.upper("b/g")).unwrap(), "data+");
}

#[test]
fn a_write_through_one_hard_link_is_seen_through_all_of_them() {
    // Names in directories nobody has looked at yet, one of them hidden
    // by a whiteout in the layer above.
    let fx = Fx::new(2);
    fx.put("l1/a/f", "data");
    for d in ["b", "c/d", "e"] {
        fs::create_dir_all(fx.root.join("l1").join(d)).unwrap();
        fs::hard_link(fx.root.join("l1/a/f"), fx.root.join("l1").join(d).join("g")).unwrap();
    }
    fx.put("l0/e/.wh.g", "");
    let u = fx.union(2, true);
    let f = u.lookup(path_ino(&u, "a"), OsStr::new("f")).unwrap();
    assert_eq!(f.attr.nlink, 4);
    let h = u
        .open(f.ino, libc::O_WRONLY | libc::O_APPEND, false)
        .unwrap();
    u.write(&h, b"+", 4).unwrap();
    for p in ["a/f", "b/g", "c/d/g"] {
        let s = u.getattr(path_ino(&u, p)).unwrap();
        assert_eq!(s.ino, f.ino, "{p}: another inode");
        assert_eq!(read_all(&u, s.ino), "data+", "{p}");
        assert_eq!(
            fs::read_to_string(fx.upper(p)).unwrap(),
            "data+",
            "upper {p}"
        );
    }
    assert_eq!(u.getattr(f.ino).unwrap().attr.nlink, 3);
    assert!(u.lookup(path_ino(&u, "e"), OsStr::new("g")).is_err());
    // After a remount they are still one file.
    let u2 = fx.union(2, true);
    let ino = path_ino(&u2, "a/f");
    for p in ["b/g", "c/d/g"] {
        assert_eq!(path_ino(&u2, p), ino, "{p} after a remount");
    }
}

#[test]
fn unlink_of_lower_file_leaves_whiteout_and_name_can_come_back() {
    let fx = Fx::new(1);
    fx.put("l0/f", "lower");
    let u = fx.union(1, true);
    u.lookup(ROOT_INO, OsStr::new("f")).unwrap();
    u.unlink(ROOT_INO, OsStr::new("f")).unwrap();
    assert!(fx.upper(".wh.f").exists());
    assert!(names(&u, ROOT_INO).is_empty());
    assert_eq!(
        u.lookup(ROOT_INO, OsStr::new("f"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
    let (s, f) = u
        .create(ROOT_INO, OsStr::new("f"), 0o644, libc::O_WRONLY, ME)
        .unwrap();
    u.write(&f, b"new", 0).unwrap();
    assert!(!fx.upper(".wh.f").exists());
    assert_eq!(read_all(&u, s.ino), "new");
    // A fresh union over the same dirs sees the same.
    let u2 = fx.union(1, true);
    assert_eq!(names(&u2, ROOT_INO), vec!["f"]);
    assert_eq!(read_all(&u2, path_ino(&u2, "f")), "new");
}

#[test]
fn chmod_of_lower_file_copies_no_data_and_keeps_inode() {
    let fx = Fx::new(1);
    let big = "x".repeat(1 << 20);
    fx.put("l0/big", &big);
    let u = fx.union(1, true);
    let before = u.lookup(ROOT_INO, OsStr::new("big")).unwrap();
    let after = u
        .setattr(
            before.ino,
            &SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(after.ino, before.ino);
    assert_eq!(after.attr.perm, 0o600);
    assert_eq!(after.attr.size, 1 << 20);
    let up = fs::symlink_metadata(fx.upper("big")).unwrap();
    assert_eq!(up.blocks(), 0, "metadata-only copy-up must not copy data");
    assert_eq!(read_all(&u, before.ino).len(), 1 << 20);
    let f = u.open(before.ino, libc::O_RDONLY, false).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 1 << 20);
    assert!(buf.iter().all(|b| *b == b'x'));
    // A write fills in the data; the marker goes once it is flushed.
    let w = u.open(before.ino, libc::O_WRONLY, false).unwrap();
    u.write(&w, b"y", 0).unwrap();
    let r = u.open(before.ino, libc::O_RDONLY, false).unwrap();
    assert_eq!(r.read_at(&mut buf[..2], 0).unwrap(), 2);
    assert_eq!(&buf[..2], b"yx", "reads see the upper copy at once");
    u.finish_flush(before.ino).unwrap();
    assert_eq!(marker(&fx.upper("big")), None);
    let data = fs::read(fx.upper("big")).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert_eq!(data[0], b'y');
    assert!(data[1..].iter().all(|b| *b == b'x'));
}

fn marker(p: &Path) -> Option<Vec<u8>> {
    xget(p, whiteout::METACOPY_XATTR)
}

#[test]
fn copy_up_for_write_keeps_its_marker_until_flushed() {
    let fx = Fx::new(1);
    fx.put("l0/f", &"x".repeat(100_000));
    let u = fx.union(1, true);
    let ino = u.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
    let w = u.open(ino, libc::O_WRONLY | libc::O_APPEND, false).unwrap();
    assert!(w.is_upper());
    u.write(&w, b"tail", 100_000).unwrap();
    // finish_flush waits for a flush the background thread has begun.
    u.finish_flush(ino).unwrap();
    assert_eq!(marker(&fx.upper("f")), None);
    assert_eq!(u.getattr(ino).unwrap().attr.size, 100_004);
    let data = fs::read(fx.upper("f")).unwrap();
    assert_eq!(&data[..3], b"xxx");
    assert_eq!(&data[100_000..], b"tail");
    // Without metacopy (upper dirs read by other tools) no marker is
    // ever written: the copy is flushed before it is renamed in.
    fx.put("l0/g", "gg");
    let u = fx.union(1, false);
    let ino = u.lookup(ROOT_INO, OsStr::new("g")).unwrap().ino;
    u.open(ino, libc::O_WRONLY, false).unwrap();
    assert_eq!(marker(&fx.upper("g")), None);
    assert_eq!(fs::read(fx.upper("g")).unwrap(), b"gg");
}

#[test]
fn crash_before_a_copy_is_flushed_reads_the_lower_file() {
    // What a crash leaves when a copied-up file was appended to and its
    // data never reached the disk: the placeholder with its markers (one
    // of an earlier boot), the new size, and whatever blocks made it.
    // "t" had a 4-byte tail when its data was filled in, which stays.
    let fx = Fx::new(1);
    fx.put("l0/d/f", &"x".repeat(5000));
    fx.put("upper/d/f", &"\0".repeat(5010));
    fx.put("l0/d/t", &"x".repeat(5000));
    fx.put("upper/d/t", &format!("{}TAIL+unsynced", "\0".repeat(5000)));
    fx.put("upper/d/same", "");
    fx.put("l0/d/same", "lower");
    for (name, size) in [("f", None), ("t", None), ("same", Some(5))] {
        let p = fx.upper(&format!("d/{name}"));
        let x = |n: &str, v: &[u8]| xset(&p, n, v).unwrap();
        x(whiteout::METACOPY_XATTR, format!("d/{name}").as_bytes());
        match size {
            Some(s) => fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(s)
                .unwrap(),
            None if name == "t" => x(whiteout::UNFLUSHED_XATTR, b"an-earlier-boot 5004"),
            None => x(whiteout::UNFLUSHED_XATTR, b"an-earlier-boot 5000"),
        }
    }
    let u = fx.union(1, true);
    let d = u.lookup(ROOT_INO, OsStr::new("d")).unwrap().ino;
    let f = u.lookup(d, OsStr::new("f")).unwrap();
    assert_eq!(f.attr.size, 5000, "the size is the lower file's again");
    let mut buf = vec![0u8; 8192];
    let r = u.open(f.ino, libc::O_RDONLY, false).unwrap();
    assert_eq!(r.read_at(&mut buf, 0).unwrap(), 5000);
    assert!(buf[..5000].iter().all(|b| *b == b'x'));
    assert_eq!(fs::metadata(fx.upper("d/f")).unwrap().len(), 5000);
    let t = u.lookup(d, OsStr::new("t")).unwrap().ino;
    assert_eq!(read_all(&u, t), format!("{}TAIL", "x".repeat(5000)));
    // A chmod-only copy (same size) is a plain metacopy file.
    let same = u.lookup(d, OsStr::new("same")).unwrap().ino;
    assert_eq!(read_all(&u, same), "lower");
}

#[test]
fn write_only_open_appends_without_copying_the_data() {
    let fx = Fx::new(1);
    let lower = "x".repeat(300_000);
    for name in ["f", "g", "h", "r"] {
        fx.put(&format!("l0/{name}"), &lower);
    }
    fx.put("l0/k", "kk");
    let u = fx.union(1, true);
    let ino = u.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
    let w = u.open(ino, libc::O_WRONLY | libc::O_APPEND, true).unwrap();
    assert!(matches!(w, OpenFile::Tail(_)));
    u.write(&w, b"tail", 300_000).unwrap();
    let meta = fs::metadata(fx.upper("f")).unwrap();
    assert_eq!(meta.len(), 300_004);
    let raw = fs::read(fx.upper("f")).unwrap();
    assert!(raw[..300_000].iter().all(|b| *b == 0), "no data copied");
    // The space the data will need is reserved: filling it in later
    // cannot run out of space.
    assert!(
        meta.blocks() * 512 >= 300_000,
        "space reserved: {} blocks",
        meta.blocks()
    );
    assert!(marker(&fx.upper("f")).is_some());
    assert_eq!(u.getattr(ino).unwrap().attr.size, 300_004);
    // The tail is on disk as it is: a new mount reads lower data + tail.
    let again = fx.union(1, true);
    let ino2 = again.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
    assert_eq!(read_all(&again, ino2), format!("{lower}tail"));
    drop(again);
    // Opening it for reading fills the data in, keeping the tail.
    u.write(&w, b"more", 300_004).unwrap();
    assert_eq!(read_all(&u, ino), format!("{lower}tailmore"));
    u.finish_flush(ino).unwrap();
    assert_eq!(marker(&fx.upper("f")), None);

    // A write inside the lower data fills it in first.
    let g = u.lookup(ROOT_INO, OsStr::new("g")).unwrap().ino;
    let w = u.open(g, libc::O_WRONLY, true).unwrap();
    assert!(matches!(w, OpenFile::Tail(_)));
    u.write(&w, b"end", 300_000).unwrap();
    u.write(&w, b"AB", 1).unwrap();
    let mut want = lower.clone().into_bytes();
    want[1..3].copy_from_slice(b"AB");
    want.extend_from_slice(b"end");
    assert_eq!(fs::read(fx.upper("g")).unwrap(), want);
    assert_eq!(read_all(&u, g).into_bytes(), want);
    // ... also once its name is gone (through the handle's own file).
    let h = u.lookup(ROOT_INO, OsStr::new("h")).unwrap().ino;
    let w = u.open(h, libc::O_WRONLY, true).unwrap();
    let keep = fs::File::open(fx.upper("h")).unwrap();
    u.unlink(ROOT_INO, OsStr::new("h")).unwrap();
    u.write(&w, b"Z", 0).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut &keep, &mut got).unwrap();
    assert_eq!(got.len(), 300_000);
    assert_eq!(&got[..2], b"Zx");
    // A reader opened while a tail may still come reads the upper file.
    let r = u.lookup(ROOT_INO, OsStr::new("r")).unwrap().ino;
    let w = u.open(r, libc::O_WRONLY | libc::O_APPEND, true).unwrap();
    let reader = u.open(r, libc::O_RDONLY, false).unwrap();
    assert!(reader.is_upper(), "a reader of a file with a tail open");
    u.write(&w, b"new", 300_000).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(reader.read_at(&mut buf, 299_999).unwrap(), 4);
    assert_eq!(&buf[..4], b"xnew");
    drop((w, reader));
    // Without defer_data, or with O_RDWR or O_TRUNC, opens are as before.
    let k = u.lookup(ROOT_INO, OsStr::new("k")).unwrap().ino;
    assert!(matches!(
        u.open(k, libc::O_WRONLY, false).unwrap(),
        OpenFile::Upper(_)
    ));
    assert!(matches!(
        u.open(k, libc::O_RDWR, true).unwrap(),
        OpenFile::Upper(_)
    ));
}

#[test]
fn a_copy_filled_in_this_boot_survives_its_server() {
    // The server died after filling in two copies and appending, before
    // flushing them; one was filled in this boot, one in an earlier one.
    let fx = Fx::new(1);
    let Some(boot) = flush::boot_id() else {
        panic!("no /proc/sys/kernel/random/boot_id");
    };
    for (name, id) in [("now", boot), ("before", b"an-earlier-boot".to_vec())] {
        fx.put(&format!("l0/{name}"), "lower");
        fx.put(&format!("upper/{name}"), "lower+appended");
        let p = fx.upper(name);
        let x = |n: &str, v: &[u8]| xset(&p, n, v).unwrap();
        x(whiteout::METACOPY_XATTR, name.as_bytes());
        x(whiteout::UNFLUSHED_XATTR, &id);
    }
    let u = fx.union(1, true);
    let now = u.lookup(ROOT_INO, OsStr::new("now")).unwrap();
    assert_eq!(read_all(&u, now.ino), "lower+appended");
    assert_eq!(now.attr.size, 14);
    let before = u.lookup(ROOT_INO, OsStr::new("before")).unwrap();
    assert_eq!(read_all(&u, before.ino), "lower");
    assert_eq!(before.attr.size, 5);
    for (name, metacopy) in [("now", false), ("before", true)] {
        let p = fx.upper(name);
        assert_eq!(marker(&p).is_some(), metacopy, "{name}: marker");
        let unflushed = xget(&p, whiteout::UNFLUSHED_XATTR);
        assert_eq!(unflushed, None, "{name}: unflushed mark left");
    }
}

#[test]
fn open_with_o_trunc_copies_no_data() {
    let fx = Fx::new(1);
    fx.put("l0/f", "lower data");
    let u = fx.union(1, true);
    let s = u.lookup(ROOT_INO, OsStr::new("f")).unwrap();
    let f = u
        .open(s.ino, libc::O_WRONLY | libc::O_TRUNC, false)
        .unwrap();
    assert_eq!(u.getattr(s.ino).unwrap().attr.size, 0);
    u.write(&f, b"n", 0).unwrap();
    assert_eq!(fs::read_to_string(fx.upper("f")).unwrap(), "n");
}

#[test]
fn rename_of_lower_dir_moves_its_tree() {
    let fx = Fx::new(2);
    fx.put("l1/d/a", "a");
    fx.put("l1/d/sub/b", "b");
    fx.put("l0/d/c", "c");
    fx.put("l1/t/x", "hidden below the new name");
    fx.put("l0/.wh.t", "");
    let u = fx.union(2, true);
    let d = path_ino(&u, "d");
    u.rename(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("t"), 0)
        .unwrap();
    assert_eq!(names(&u, ROOT_INO), vec!["t"]);
    assert_eq!(path_ino(&u, "t"), d);
    assert_eq!(names(&u, d), vec!["a", "c", "sub"]);
    assert_eq!(read_all(&u, path_ino(&u, "t/sub/b")), "b");
    // The same tree after a remount: the old lower content of `t` stays hidden.
    let u2 = fx.union(2, true);
    assert_eq!(names(&u2, ROOT_INO), vec!["t"]);
    assert_eq!(names(&u2, path_ino(&u2, "t")), vec!["a", "c", "sub"]);
}

#[test]
fn mkdir_over_deleted_lower_dir_is_empty() {
    let fx = Fx::new(1);
    fx.put("l0/d/f", "f");
    let u = fx.union(1, true);
    let d = path_ino(&u, "d");
    assert_eq!(
        u.rmdir(ROOT_INO, OsStr::new("d"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    u.unlink(d, OsStr::new("f")).unwrap();
    u.rmdir(ROOT_INO, OsStr::new("d")).unwrap();
    let nd = u.mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME).unwrap();
    assert_ne!(nd.ino, d);
    assert!(names(&u, nd.ino).is_empty());
    let u2 = fx.union(1, true);
    assert!(names(&u2, path_ino(&u2, "d")).is_empty());
}

#[test]
fn reserved_names_and_read_only() {
    let fx = Fx::new(1);
    let u = fx.union(1, true);
    let e = u
        .create(ROOT_INO, OsStr::new(".wh.x"), 0o644, libc::O_WRONLY, ME)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let ro = Union::new(Config {
        lowers: vec![Arc::new(DirLayer::new(&fx.root.join("l0")).unwrap())],
        upper: None,
        metacopy: true,
        fsync: true,
    })
    .unwrap();
    assert_eq!(
        ro.mkdir(ROOT_INO, OsStr::new("x"), 0o755, ME)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
}

#[test]
fn leftover_copy_up_temp_files_are_cleared() {
    let fx = Fx::new(1);
    fx.put("work/rcfs-tmp-1-0", "half a copy");
    let _u = fx.union(1, true);
    assert!(!fx.root.join("work/rcfs-tmp-1-0").exists());
}

#[test]
fn listing_and_loading_in_parallel_do_not_deadlock() {
    // Readdir of a dir and of its subdirs, prefetch scans, and loads
    // that add nodes, all at once: each takes node locks and the inode
    // table in its own pattern.
    let fx = Fx::new(4);
    for l in 0..4 {
        for d in 0..12 {
            for s in 0..12 {
                fx.put(&format!("l{l}/d{d}/s{s}/f{l}"), "x");
            }
        }
    }
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..20 {
            let u = Arc::new(fx.union(4, true));
            let dirs: Vec<u64> = u
                .list_dir(ROOT_INO)
                .unwrap()
                .iter()
                .map(|e| e.ino)
                .collect();
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let (u, dirs) = (u.clone(), dirs.clone());
                    std::thread::spawn(move || {
                        for &d in &dirs {
                            match w {
                                0 | 1 => {
                                    u.list_dir(d).unwrap();
                                    u.drop_listing(d);
                                    u.list_dir(ROOT_INO).unwrap();
                                    u.drop_listing(ROOT_INO);
                                }
                                2 => {
                                    for s in u.unloaded_subdirs(d) {
                                        u.preload(s);
                                    }
                                }
                                _ => {
                                    u.unloaded_subdirs(ROOT_INO);
                                    for s in u.list_dir(d).unwrap().iter() {
                                        u.list_dir(s.ino).unwrap();
                                        u.drop_listing(s.ino);
                                    }
                                }
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("deadlock: listing and loading threads stopped making progress");
}

#[test]
fn readdir_resumes_at_its_offset_while_the_dir_changes() {
    let fx = Fx::new(1);
    for i in 0..50 {
        fx.put(&format!("l0/f{i:02}"), "x");
    }
    let u = fx.union(1, true);
    let first = u.list_dir(ROOT_INO).unwrap();
    // A reader has seen the first 20 entries; then one of those goes and
    // a new name comes.
    let resume = first[19].cookie;
    let rest_before: Vec<OsString> = first[20..]
        .iter()
        .map(|e| e.name.as_ref().to_owned())
        .collect();
    u.unlink(ROOT_INO, &first[3].name.clone()).unwrap();
    u.create(ROOT_INO, OsStr::new("new"), 0o644, libc::O_WRONLY, ME)
        .unwrap();
    let now = u.list_dir(ROOT_INO).unwrap();
    let rest_after: Vec<OsString> = now
        .iter()
        .filter(|e| e.cookie > resume)
        .map(|e| e.name.as_ref().to_owned())
        .filter(|n| n != "new")
        .collect();
    // Nothing the reader has not seen is skipped or repeated.
    assert_eq!(rest_after, rest_before);
    // A listing dropped at the end of a pass comes back the same.
    u.drop_listing(ROOT_INO);
    let again = u.list_dir(ROOT_INO).unwrap();
    assert!(!Arc::ptr_eq(&now, &again), "the listing was not dropped");
    let key = |l: &[DirEntry]| -> Vec<(u64, OsString, u64)> {
        l.iter()
            .map(|e| (e.ino, e.name.as_ref().to_owned(), e.cookie))
            .collect()
    };
    assert_eq!(key(&now), key(&again));
}

/// A host directory layer that records what is asked of it ahead.
#[derive(Debug)]
struct Recording {
    inner: DirLayer,
    layer: usize,
    asked: Arc<parking_lot::Mutex<Vec<(usize, String, u64)>>>,
}

impl Layer for Recording {
    fn stat(&self, path: &Path) -> io::Result<Attr> {
        self.inner.stat(path)
    }
    fn read_dir(
        &self,
        path: &Path,
        each: &mut layer::EntryVisitor<'_>,
    ) -> io::Result<Vec<OsString>> {
        self.inner.read_dir(path, each)
    }
    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        self.inner.readlink(path)
    }
    fn list_xattrs(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.inner.list_xattrs(path)
    }
    fn get_xattr(&self, path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        self.inner.get_xattr(path, name)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LowerFile>> {
        self.inner.open(path)
    }
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn statfs(&self) -> io::Result<layer::FsStats> {
        self.inner.statfs()
    }
    fn links_of(&self, file_id: u64) -> io::Result<Vec<PathBuf>> {
        self.inner.links_of(file_id)
    }
    fn will_need(&self, path: &Path, len: u64) -> io::Result<()> {
        let p = path.to_string_lossy().into_owned();
        self.asked.lock().push((self.layer, p, len));
        self.inner.will_need(path, len)
    }
}

#[test]
fn read_ahead_asks_the_next_files_of_the_directory_in_readdir_order() {
    let fx = Fx::new(2);
    for i in 0..20 {
        fx.put(&format!("l1/d/f{i:02}"), "lower");
    }
    fx.put("l0/d/f05", &"x".repeat(300 * 1024)); // hides l1's, is large
    fs::create_dir_all(fx.root.join("l1/d/sub")).unwrap();
    let asked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let lowers: Vec<Arc<dyn Layer>> = (0..2)
        .map(|i| {
            Arc::new(Recording {
                inner: DirLayer::new(&fx.root.join(format!("l{i}"))).unwrap(),
                layer: i,
                asked: asked.clone(),
            }) as Arc<dyn Layer>
        })
        .collect();
    let u = Union::new(Config {
        lowers,
        upper: Some(UpperConfig {
            upper: fx.root.join("upper"),
            work: fx.root.join("work"),
        }),
        metacopy: true,
        fsync: true,
    })
    .unwrap();
    let d = path_ino(&u, "d");
    // f07 copied up with its data: nothing left below to read ahead.
    let f07 = path_ino(&u, "d/f07");
    drop(u.open(f07, libc::O_RDWR, false).unwrap());
    // f09 chmod'ed: a metacopy, its data still below.
    let f09 = path_ino(&u, "d/f09");
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    u.setattr(f09, &chmod, None).unwrap();

    let all = u.list_dir(d).unwrap();
    let files: Vec<DirEntry> = all
        .iter()
        .filter(|e| e.kind == Kind::File)
        .cloned()
        .collect();
    assert_eq!(files.len(), 20);
    let (dir, c) = u.position(files[0].ino).unwrap();
    assert_eq!((dir, c), (d, files[0].cookie));
    let sub = all.iter().find(|e| e.kind == Kind::Dir).unwrap();
    assert_eq!(u.position(sub.ino), None, "a directory is not read ahead");

    // The 20 entries after the first file, in readdir order, 12 at most
    // per call.
    let mut got = u.read_ahead(d, c, 12);
    assert_eq!(got.len(), 12);
    got.extend(u.read_ahead(d, *got.last().unwrap(), 12));
    let want: Vec<u64> = all.iter().map(|e| e.cookie).filter(|&x| x > c).collect();
    assert_eq!(got, want);
    assert!(u.read_ahead(d, *want.last().unwrap(), 12).is_empty());

    // Each file whose data is below, once, from the layer that holds it.
    let mut asked = asked.lock().clone();
    asked.sort();
    let mut expect: Vec<(usize, String, u64)> = files[1..]
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "f07")
        .map(|n| match n.as_str() {
            "f05" => (0, format!("d/{n}"), READ_AHEAD_BYTES),
            _ => (1, format!("d/{n}"), 5),
        })
        .collect();
    expect.sort();
    assert_eq!(asked, expect);
}

#[test]
fn concurrent_lookups_and_forgets_keep_an_exact_count() {
    // Two threads look a file up and forget it, over and over, as the
    // kernel does when it drops and finds a dentry again. Every lookup is
    // forgotten, so once the file is removed its node must go at once; a
    // lost or doubled count would keep it (or drop it while in use).
    let fx = Fx::new(1);
    fx.put("l0/f", "x");
    let u = Arc::new(fx.union(1, true));
    let ino = u.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let u = u.clone();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    let s = u.lookup(ROOT_INO, OsStr::new("f")).unwrap();
                    assert_eq!(s.ino, ino);
                    u.getattr(ino).expect("a looked-up node is there");
                    u.forget(ino, 1);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // The first lookup is still held: removing the name keeps the node.
    u.unlink(ROOT_INO, OsStr::new("f")).unwrap();
    assert!(u.getattr(ino).is_ok(), "dropped while the kernel holds it");
    assert!(
        u.forget(ino, 1),
        "the last forget must say the inode is gone"
    );
    assert_eq!(
        u.getattr(ino).unwrap_err().raw_os_error(),
        Some(libc::ENOENT),
        "an unlinked node nobody holds must be dropped"
    );
    // A forget of more than is held (a confused kernel) never wraps.
    assert!(u.forget(ino, 5));
}

#[test]
fn a_lower_name_exchanged_then_removed_stays_removed() {
    // Found by the stress test: an exchange onto a name that a lower layer
    // holds kept the entry but lost that the name is a lower one, so its
    // removal left no whiteout and the lower file came back at a remount.
    let fx = Fx::new(1);
    fx.put("l0/a", "lower a");
    fx.put("l0/d/x", "lower x");
    let u = fx.union(1, true);
    let d = path_ino(&u, "d");
    u.create(ROOT_INO, OsStr::new("n"), 0o644, libc::O_WRONLY, ME)
        .unwrap();
    u.rename(
        d,
        OsStr::new("x"),
        ROOT_INO,
        OsStr::new("a"),
        libc::RENAME_EXCHANGE,
    )
    .unwrap();
    u.rename(ROOT_INO, OsStr::new("n"), ROOT_INO, OsStr::new("a"), 0)
        .unwrap();
    u.unlink(ROOT_INO, OsStr::new("a")).unwrap();
    u.unlink(d, OsStr::new("x")).unwrap();
    let u2 = fx.union(1, true);
    assert_eq!(names(&u2, ROOT_INO), vec!["d"]);
    assert!(names(&u2, path_ino(&u2, "d")).is_empty());
}
