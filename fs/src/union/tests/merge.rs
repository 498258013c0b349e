//! Merging layers: whiteouts, opaque dirs, renames of lower dirs, listings.

use super::*;
use std::ffi::OsString;

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
