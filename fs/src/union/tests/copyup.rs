//! Copy-up: metadata-only copies, flushing, crashes, write-only appends.

use super::*;
use crate::{flush, whiteout};
use std::os::unix::fs::MetadataExt;

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
    let f = u.open(before.ino, libc::O_RDONLY, Defer::Nothing).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 1 << 20);
    assert!(buf.iter().all(|b| *b == b'x'));
    // A write fills in the data; the marker goes once it is flushed.
    let w = u.open(before.ino, libc::O_WRONLY, Defer::Nothing).unwrap();
    u.write(&w, b"y", 0).unwrap();
    let r = u.open(before.ino, libc::O_RDONLY, Defer::Nothing).unwrap();
    assert_eq!(r.read_at(&mut buf[..2], 0).unwrap(), 2);
    assert_eq!(&buf[..2], b"yx", "reads see the upper copy at once");
    u.finish_flush(before.ino).unwrap();
    assert_eq!(marker(&fx.upper("big")), None);
    let data = fs::read(fx.upper("big")).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert_eq!(data[0], b'y');
    assert!(data[1..].iter().all(|b| *b == b'x'));
}

#[test]
fn copy_up_for_write_keeps_its_marker_until_flushed() {
    let fx = Fx::new(1);
    fx.put("l0/f", &"x".repeat(100_000));
    let u = fx.union(1, true);
    let ino = u.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
    let w = u
        .open(ino, libc::O_WRONLY | libc::O_APPEND, Defer::Nothing)
        .unwrap();
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
    u.open(ino, libc::O_WRONLY, Defer::Nothing).unwrap();
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
    let r = u.open(f.ino, libc::O_RDONLY, Defer::Nothing).unwrap();
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
    let w = u
        .open(ino, libc::O_WRONLY | libc::O_APPEND, Defer::Writes)
        .unwrap();
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
    let w = u.open(g, libc::O_WRONLY, Defer::Writes).unwrap();
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
    let w = u.open(h, libc::O_WRONLY, Defer::Writes).unwrap();
    let keep = fs::File::open(fx.upper("h")).unwrap();
    u.unlink(ROOT_INO, OsStr::new("h")).unwrap();
    u.write(&w, b"Z", 0).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut &keep, &mut got).unwrap();
    assert_eq!(got.len(), 300_000);
    assert_eq!(&got[..2], b"Zx");
    // A reader opened while a tail may still come reads the upper file.
    let r = u.lookup(ROOT_INO, OsStr::new("r")).unwrap().ino;
    let w = u
        .open(r, libc::O_WRONLY | libc::O_APPEND, Defer::Writes)
        .unwrap();
    let reader = u.open(r, libc::O_RDONLY, Defer::Nothing).unwrap();
    assert!(reader.is_upper(), "a reader of a file with a tail open");
    u.write(&w, b"new", 300_000).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(reader.read_at(&mut buf, 299_999).unwrap(), 4);
    assert_eq!(&buf[..4], b"xnew");
    drop((w, reader));
    // With Defer::Nothing, or with O_RDWR or O_TRUNC, opens are as before.
    let k = u.lookup(ROOT_INO, OsStr::new("k")).unwrap().ino;
    assert!(matches!(
        u.open(k, libc::O_WRONLY, Defer::Nothing).unwrap(),
        OpenFile::Upper(_)
    ));
    assert!(matches!(
        u.open(k, libc::O_RDWR, Defer::Writes).unwrap(),
        OpenFile::Upper(_)
    ));
}

/// When every read comes to the server (no passthrough), a reader of an
/// appended file copies nothing at its open (`sync FILE` opens only to
/// fsync): its first read fills the data in, also for a tail an earlier
/// mount left.
#[test]
fn a_reader_of_an_appended_file_fills_it_at_its_first_read() {
    let fx = Fx::new(1);
    let lower = "x".repeat(300_000);
    fx.put("l0/s", &lower);
    let u = fx.union(1, true);
    let ino = u.lookup(ROOT_INO, OsStr::new("s")).unwrap().ino;
    let w = u
        .open(ino, libc::O_WRONLY | libc::O_APPEND, Defer::WritesAndReads)
        .unwrap();
    assert!(matches!(w, OpenFile::Tail(_)));
    u.write(&w, b"tail", 300_000).unwrap();
    let no_copy = |why: &str| {
        let raw = fs::read(fx.upper("s")).unwrap();
        assert!(raw[..300_000].iter().all(|b| *b == 0), "data copied {why}");
        assert_eq!(&raw[300_000..], b"tail");
        assert!(marker(&fx.upper("s")).is_some());
    };
    let reader = u.open(ino, libc::O_RDONLY, Defer::WritesAndReads).unwrap();
    assert!(matches!(reader, OpenFile::Lower(_)));
    drop(w);
    u.sync_upper(ino, true).unwrap();
    no_copy("by a reader's open or its fsync");
    // A new mount finds the tail on disk; its reader's open copies nothing.
    let again = fx.union(1, true);
    let ino2 = again.lookup(ROOT_INO, OsStr::new("s")).unwrap().ino;
    let r2 = again
        .open(ino2, libc::O_RDONLY, Defer::WritesAndReads)
        .unwrap();
    assert!(matches!(r2, OpenFile::Lower(_)));
    no_copy("by a reader's open after a remount");
    // The first read (through the file the handle reads now) fills it in.
    for (u, ino) in [(&again, ino2), (&u, ino)] {
        let f = u.reopen_if_copied_up(ino).unwrap().expect("the upper file");
        let mut buf = [0u8; 8];
        assert_eq!(f.read_at(&mut buf, 299_999).unwrap(), 5);
        assert_eq!(&buf[..5], b"xtail");
    }
    drop((reader, r2));
    assert_eq!(read_all(&u, ino), format!("{lower}tail"));
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
        .open(s.ino, libc::O_WRONLY | libc::O_TRUNC, Defer::Nothing)
        .unwrap();
    assert_eq!(u.getattr(s.ino).unwrap().attr.size, 0);
    u.write(&f, b"n", 0).unwrap();
    assert_eq!(fs::read_to_string(fx.upper("f")).unwrap(), "n");
}
