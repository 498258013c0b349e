//! Inode numbers and hard links; kernel lookup counts.

use super::*;

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
        .open(f.ino, libc::O_WRONLY | libc::O_APPEND, Defer::Nothing)
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
        .open(f.ino, libc::O_WRONLY | libc::O_APPEND, Defer::Nothing)
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
