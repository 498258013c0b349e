//! Copy-up: what a lower file (and its parent dirs) looks like once the
//! upper dir holds it, and rcfs's metadata-only copy-up.

use std::os::unix::fs::MetadataExt;

use crate::harness::Fixture;
use crate::layers::{pattern, Layer};
use crate::sys;

/// Writing a file whose parent dirs exist only in a lower layer copies the
/// parents up with their modes, owners and xattrs; the file keeps its own.
#[test]
fn copy_up_of_deep_file_copies_parents_with_metadata() {
    let bottom = Layer::new()
        .file_mode("a/b/c/d/e/file", "deep\n", 0o640)
        .owner("a/b/c/d/e/file", 1000, 1001)
        .xattr("a/b/c/d/e/file", "user.f", "file xattr")
        .dir_mode("a/b", 0o750)
        .owner("a/b", 1000, 1000)
        .xattr("a/b", "user.dir", "b")
        .dir_mode("a/b/c/d", 0o711)
        .file("a/b/c/sibling", "s")
        .file("a/b/c/d/e/other", "o");
    let top = Layer::new().file("a/b/c/top", "t");
    let fix = Fixture::new(&[top, bottom], &Layer::new());
    fix.check(|c| {
        if let Ok(fd) = c.open(
            "a/b/c/d/e/file",
            libc::O_WRONLY | libc::O_APPEND,
            0,
            "O_APPEND",
        ) {
            c.fwrite(&fd, b"appended\n").ok();
        }
        c.read("a/b/c/d/e/file").ok();
        for p in [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/d",
            "a/b/c/d/e",
            "a/b/c/d/e/file",
        ] {
            c.stat(p).ok();
            c.listxattr(p).ok();
        }
        c.readdir("a/b/c").ok();
        c.readdir("a/b/c/d/e").ok();
    });
    if fix.imp.is_rcfs() {
        let up = fix.subject_upper().join("a/b/c/d/e/file");
        assert_eq!(
            std::fs::read(&up).ok().as_deref(),
            Some(&b"deep\nappended\n"[..]),
            "rcfs upper {}",
            up.display()
        );
        assert!(
            !fix.subject_upper().join("a/b/c/d/e/other").exists(),
            "rcfs copied up an untouched sibling"
        );
    }
}

/// A data copy-up keeps the file's mode, owner, xattrs; a metadata change
/// keeps its mtime too.
#[test]
fn copy_up_preserves_metadata() {
    let bottom = Layer::new()
        .file_mode("f", "data", 0o4751)
        .owner("f", 1000, 1001)
        .xattr("f", "user.one", "1")
        .xattr("f", "user.two", "2")
        .file_mode("g", "data", 0o600)
        .owner("g", 2000, 2000)
        .xattr("g", "user.one", "1")
        .file("h", "h");
    let fix = Fixture::new(&[bottom], &Layer::new());
    fix.check(|c| {
        // Truncating a setuid file as root: the kernel keeps the bit for root.
        c.truncate("f", 2).ok();
        c.stat("f").ok();
        c.listxattr("f").ok();
        c.setxattr("g", "user.two", b"2", 0).ok();
        c.times("g").ok();
        c.stat("g").ok();
        c.chmod("h", 0o600).ok();
        c.times("h").ok();
    });
}

const BIG: usize = 64 << 20;

fn upper_blocks(fix: &Fixture, p: &str) -> (u64, u64) {
    let m = std::fs::symlink_metadata(fix.subject_upper().join(p))
        .unwrap_or_else(|e| panic!("rcfs upper has no {p}: {e}"));
    (m.len(), m.blocks())
}

/// A sparse lower file keeps its holes: SEEK_DATA/SEEK_HOLE find them
/// through the mount as on kernel overlayfs, and copy-up allocates only the
/// data (kernel overlayfs skips holes too, in 1 MiB pieces, so the holes of
/// its copies are coarser and their offsets are not compared).
#[test]
fn sparse_files_keep_their_holes() {
    const LEN: u64 = 16 << 20;
    let extents: &[(u64, &[u8])] = &[(0, b"head"), (5 << 20, b"middle"), (9 << 20, b"more")];
    let bottom = Layer::new()
        .sparse_file("ro", LEN, extents)
        .sparse_file("rw", LEN, extents)
        .sparse_file("chmod", LEN, extents);
    let fix = Fixture::new(&[bottom], &Layer::new());
    fix.check(|c| {
        if let Ok(fd) = c.open("ro", libc::O_RDONLY, 0, "O_RDONLY") {
            for off in [
                0,
                1,
                4096,
                3 << 20,
                (5 << 20) + 3,
                6 << 20,
                10 << 20,
                LEN - 1,
                LEN,
            ] {
                c.lseek(&fd, off as i64, libc::SEEK_DATA).ok();
                c.lseek(&fd, off as i64, libc::SEEK_HOLE).ok();
            }
        }
        // A data copy-up, then a write into a hole.
        if let Ok(fd) = c.open("rw", libc::O_RDWR, 0, "O_RDWR") {
            c.pwrite(&fd, b"new", 12 << 20).ok();
            c.fsync(&fd).ok();
        }
        // A metadata-only copy-up.
        c.chmod("chmod", 0o600).ok();
    });
    let root = &fix.subject.root;
    for (p, data) in [
        ("rw", vec![0, 5 << 20, 9 << 20, 12 << 20]),
        ("chmod", vec![0, 5 << 20, 9 << 20]),
    ] {
        let fd = sys::open(&root.join(p), libc::O_RDONLY, 0).unwrap();
        // Every run of data is found where it starts, and a hole follows it.
        for &x in &data {
            assert_eq!(
                sys::lseek(&fd, x, libc::SEEK_DATA),
                Ok(x),
                "{p}: SEEK_DATA {x}"
            );
            let hole = sys::lseek(&fd, x, libc::SEEK_HOLE).unwrap();
            assert!(
                hole > x && hole < x + (1 << 20),
                "{p}: SEEK_HOLE {x} = {hole}"
            );
        }
        assert_eq!(
            sys::lseek(&fd, (10 << 20) + 1, libc::SEEK_HOLE),
            Ok((10 << 20) + 1)
        );
        let (len, blocks) = upper_blocks(&fix, p);
        assert_eq!(len, LEN);
        assert!(
            blocks * 512 <= 1 << 20,
            "the copy of sparse {p} allocates {} KiB of its {} KiB",
            blocks / 2,
            LEN >> 10
        );
    }
}

/// chmod/chown/utimens/setxattr of a big lower file copy no data: the upper
/// file is sparse (st_blocks ~0) and marked `user.rcfs.metacopy`, yet reads
/// through the mount give the lower bytes; a later write copies the data.
#[test]
fn metadata_only_copy_up_copies_no_data() {
    let bottom = Layer::new()
        .big_file("big", BIG)
        .big_file("b-chown", 1 << 20)
        .big_file("b-utime", 1 << 20)
        .big_file("b-xattr", 1 << 20);
    let fix = Fixture::new(&[bottom], &Layer::new());
    fix.check(|c| {
        c.chmod("big", 0o600).ok();
        c.chown("b-chown", 5, 6).ok();
        c.utimens("b-utime", (1_000_000_000, 0), (1_000_000_000, 0), 0)
            .ok();
        c.setxattr("b-xattr", "user.k", b"v", 0).ok();
        c.read("big").ok();
        c.listxattr("big").ok();
    });
    if !fix.imp.is_rcfs() {
        eprintln!(
            "{}: metadata-only copy-up is rcfs-only behaviour; upper dir not checked",
            fix.name()
        );
        return;
    }
    for (p, len) in [
        ("big", BIG),
        ("b-chown", 1 << 20),
        ("b-utime", 1 << 20),
        ("b-xattr", 1 << 20),
    ] {
        let (size, blocks) = upper_blocks(&fix, p);
        assert_eq!(size, len as u64, "rcfs upper {p}: size");
        assert!(
            blocks * 512 <= 64 << 10,
            "rcfs upper {p}: {blocks} blocks allocated; metadata change copied data"
        );
        let up = fix.subject_upper().join(p);
        assert!(
            sys::lgetxattr(&up, "user.rcfs.metacopy").is_ok(),
            "rcfs upper {p}: no user.rcfs.metacopy xattr"
        );
    }
    // The first open for reading and writing copies the data (a write-only
    // one may not: see write_only_append_copies_no_data); reads stay right
    // through it.
    fix.check(|c| {
        if let Ok(fd) = c.open("big", libc::O_RDWR | libc::O_APPEND, 0, "O_RDWR|O_APPEND") {
            c.fwrite(&fd, b"tail").ok();
            // The marker goes once the data is on disk; fsync waits for that.
            c.fsync(&fd).ok();
        }
        if let Ok(fd) = c.open("b-chown", libc::O_RDWR, 0, "O_RDWR") {
            c.pwrite(&fd, b"X", 500_000).ok();
            c.pread(&fd, 1 << 20, 0).ok();
        }
        c.read("big").ok();
        c.mtime("b-utime").ok();
        c.read("b-utime").ok();
    });
    let (size, blocks) = upper_blocks(&fix, "big");
    assert_eq!(size, BIG as u64 + 4, "rcfs upper big after append");
    assert!(
        blocks * 512 >= BIG as u64,
        "rcfs upper big after append: only {blocks} blocks; data not copied up"
    );
    let data = std::fs::read(fix.subject_upper().join("big")).unwrap();
    assert!(
        data[..BIG] == pattern(BIG, 3)[..] && &data[BIG..] == b"tail",
        "rcfs upper big: wrong bytes after copy-up"
    );
    assert!(
        sys::lgetxattr(&fix.subject_upper().join("big"), "user.rcfs.metacopy").is_err(),
        "rcfs upper big: still marked metacopy after data copy-up"
    );
}

/// A write-only open of a lower file (`>>` in a shell, a log file) copies
/// no data: appends go into a metacopy upper file past the lower file's
/// size. Opening the file for reading, or a write inside the lower data,
/// fills the data in; the file reads right through all of it, also after a
/// remount and after its server was killed. With FUSE passthrough (root).
#[test]
fn write_only_append_copies_no_data() {
    write_only_append(Fixture::new);
}

/// The same without passthrough (a rootless server): every open, the
/// append's too, goes through the kernel's page cache.
#[test]
fn write_only_append_copies_no_data_without_passthrough() {
    write_only_append(Fixture::without_passthrough);
}

fn write_only_append(fixture: fn(&[Layer], &Layer) -> Fixture) {
    let bottom = Layer::new()
        .big_file("log", BIG)
        .big_file("w", BIG)
        .big_file("kept", BIG)
        .big_file("read-too", BIG)
        .file("odd", "not a page");
    let mut fix = fixture(&[bottom], &Layer::new());
    let append = |c: &mut crate::ops::Ops, p: &str, data: &[u8], sync: bool| {
        if let Ok(fd) = c.open(p, libc::O_WRONLY | libc::O_APPEND, 0, "O_WRONLY|O_APPEND") {
            c.fwrite(&fd, data).ok();
            c.fstat(&fd).ok();
            if sync {
                c.fsync(&fd).ok();
            }
        }
    };
    let first = |c: &mut crate::ops::Ops| {
        append(c, "log", b"line 1\n", false);
        append(c, "log", b"line 2\n", true);
        append(c, "kept", b"synced", true);
        append(c, "odd", b" but a tail", false);
        c.stat("log").ok();
        // A reader opened between a write-only open and its first write
        // sees what is appended.
        if let Ok(w) = c.open("read-too", libc::O_WRONLY | libc::O_APPEND, 0, "O_WRONLY") {
            if let Ok(r) = c.open("read-too", libc::O_RDONLY, 0, "O_RDONLY") {
                c.fwrite(&w, b"appended").ok();
                c.pread(&r, 64, BIG as i64 - 3).ok();
                c.fstat(&r).ok();
            }
        }
        if let Ok(fd) = c.open("w", libc::O_WRONLY, 0, "O_WRONLY") {
            c.pwrite(&fd, b"end", BIG as i64).ok();
            c.pwrite(&fd, b"past a hole", BIG as i64 + 100_000).ok();
        }
    };
    // The upper dir is looked at before anything reads the files.
    let (k, s) = (fix.on_kernel(first), fix.on_subject(first));
    assert_eq!(k, s, "{} results differ from kernel overlayfs", fix.name());
    if fix.imp.is_rcfs() {
        for (p, size) in [("log", BIG + 14), ("w", BIG + 100_011), ("kept", BIG + 6)] {
            let (len, blocks) = upper_blocks(&fix, p);
            assert_eq!(len, size as u64, "rcfs upper {p}: size");
            let data = std::fs::read(fix.subject_upper().join(p)).unwrap();
            assert!(
                data[..BIG].iter().all(|b| *b == 0),
                "rcfs upper {p}: a write-only append copied the lower data"
            );
            // The space the data needs is reserved when the file is opened,
            // so that filling it in later cannot fail for lack of space.
            assert!(
                blocks * 512 >= BIG as u64,
                "rcfs upper {p}: only {blocks} blocks allocated; the data's space is not reserved"
            );
            assert!(
                sys::lgetxattr(&fix.subject_upper().join(p), "user.rcfs.metacopy").is_ok(),
                "rcfs upper {p}: no user.rcfs.metacopy xattr"
            );
        }
    }
    fix.check_trees();
    // Readers and writes inside the data, through a write-only fd too.
    fix.check(|c| {
        c.read("log").ok();
        c.read("odd").ok();
        append(c, "odd", b", and more", false);
        c.read("odd").ok();
        if let Ok(fd) = c.open("w", libc::O_WRONLY, 0, "O_WRONLY") {
            c.pwrite(&fd, b"inside", 4096 * 3 + 5).ok();
            c.fstat(&fd).ok();
        }
        c.read("w").ok();
    });
    if fix.imp.is_rcfs() {
        let (_, blocks) = upper_blocks(&fix, "log");
        assert!(
            blocks * 512 >= BIG as u64,
            "rcfs upper log: data not filled in by a read"
        );
    }
    fix.remount();
    fix.check(|c| {
        for p in ["log", "w", "kept", "odd"] {
            c.stat(p).ok();
            c.read(p).ok();
        }
        append(c, "kept", b", again", false);
    });
    // A server killed after an append loses none of it.
    let servers = crate::mounts::daemons_of(&fix.subject.root);
    crate::mounts::kill_hard(&servers);
    fix.remount();
    fix.check(|c| {
        c.stat("kept").ok();
        c.read("kept").ok();
    });
}

/// A file read through an fd opened before a write-only open appended to
/// it (its last page cached, zeros past the end) reads the appended bytes
/// through that fd, while the append is open and after it is closed, as on
/// overlayfs (which reopens the copied-up file under the old fd). Without
/// passthrough: with it, the earlier fd keeps reading the lower file (see
/// `inodes::passthrough_file_open_for_reading_can_be_opened_for_writing`).
#[test]
fn an_earlier_reader_sees_a_write_only_append() {
    let bottom = Layer::new()
        .big_file("log", BIG)
        .big_file("synced", BIG)
        .file("short", "ends mid-page");
    let fix = Fixture::without_passthrough(&[bottom], &Layer::new());
    // `sync FILE` after an append opens the file only to fsync it: that
    // copies no data either.
    let sync = |c: &mut crate::ops::Ops| {
        if let Ok(w) = c.open(
            "synced",
            libc::O_WRONLY | libc::O_APPEND,
            0,
            "O_WRONLY|O_APPEND",
        ) {
            c.fwrite(&w, b"appended").ok();
        }
        if let Ok(fd) = c.open("synced", libc::O_RDONLY, 0, "O_RDONLY") {
            c.fsync(&fd).ok();
        }
        c.stat("synced").ok();
    };
    // The upper dir is looked at before anything reads the file.
    let (k, s) = (fix.on_kernel(sync), fix.on_subject(sync));
    assert_eq!(k, s, "{} results differ from kernel overlayfs", fix.name());
    if fix.imp.is_rcfs() {
        let data = std::fs::read(fix.subject_upper().join("synced")).unwrap();
        assert!(
            data.len() == BIG + 8 && data[..BIG].iter().all(|b| *b == 0),
            "rcfs upper synced: the lower data was copied by an open for fsync"
        );
    }
    {
        fix.check(|c| {
            let (Ok(log), Ok(short)) = (
                c.open("log", libc::O_RDONLY, 0, "O_RDONLY"),
                c.open("short", libc::O_RDONLY, 0, "O_RDONLY"),
            ) else {
                return;
            };
            c.pread(&log, 8192, BIG as i64 - 4100).ok();
            c.pread(&short, 4096, 0).ok();
            if let Ok(w) = c.open(
                "log",
                libc::O_WRONLY | libc::O_APPEND,
                0,
                "O_WRONLY|O_APPEND",
            ) {
                c.fwrite(&w, b"appended while open").ok();
                c.pread(&log, 8192, BIG as i64 - 4100).ok();
                c.fstat(&log).ok();
            }
            if let Ok(w) = c.open(
                "short",
                libc::O_WRONLY | libc::O_APPEND,
                0,
                "O_WRONLY|O_APPEND",
            ) {
                c.fwrite(&w, b", then closed").ok();
            }
            c.pread(&short, 4096, 0).ok();
            c.fstat(&short).ok();
            c.read("short").ok();
            c.pread(&log, 8192, BIG as i64 - 4100).ok();
        });
        fix.check_trees();
    }
}

/// A data copy-up reaches the disk in the background: until then the upper
/// file keeps its metacopy marker (a crash reads the lower bytes). fsync of
/// the file, and unmounting, finish the flush and drop the marker.
#[test]
fn data_copy_up_is_flushed_by_fsync_and_by_unmount() {
    let bottom = Layer::new()
        .big_file("synced", BIG)
        .big_file("unsynced", BIG);
    let mut fix = Fixture::new(&[bottom], &Layer::new());
    let marked = |fix: &Fixture, p: &str| {
        sys::lgetxattr(&fix.subject_upper().join(p), "user.rcfs.metacopy").is_ok()
    };
    fix.check(|c| {
        for (p, sync) in [("synced", true), ("unsynced", false)] {
            if let Ok(fd) = c.open(p, libc::O_RDWR | libc::O_APPEND, 0, "O_RDWR|O_APPEND") {
                c.fwrite(&fd, b"tail").ok();
                if sync {
                    c.fsync(&fd).ok();
                }
            }
        }
    });
    if fix.imp.is_rcfs() {
        assert!(
            !marked(&fix, "synced"),
            "rcfs upper synced: marker after fsync"
        );
    }
    fix.remount();
    if fix.imp.is_rcfs() {
        assert!(
            !marked(&fix, "unsynced"),
            "rcfs upper unsynced: marker left after unmount"
        );
        let data = std::fs::read(fix.subject_upper().join("unsynced")).unwrap();
        assert!(
            data[..BIG] == pattern(BIG, "unsynced".len() as u8)[..] && &data[BIG..] == b"tail",
            "rcfs upper unsynced: wrong bytes after unmount"
        );
    }
    fix.check(|c| {
        c.read("synced").ok();
        c.read("unsynced").ok();
        c.stat("unsynced").ok();
    });
}

/// The server is killed right after a copy-up for an append, before it has
/// flushed the copy: the system did not go down, so the data is all there
/// and the next mount must show it (and finish the flush).
#[test]
fn appended_copy_up_survives_a_killed_server() {
    let bottom = Layer::new().big_file("f", BIG);
    let mut fix = Fixture::new(&[bottom], &Layer::new());
    let servers = crate::mounts::daemons_of(&fix.subject.root);
    assert!(!servers.is_empty(), "no server of {} found", fix.name());
    let append = |root: &std::path::Path| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(root.join("f"))
            .unwrap();
        f.write_all(b"tail").unwrap();
    };
    append(&fix.kernel.root);
    // Kill at once: flushing 64 MiB takes far longer than this.
    append(&fix.subject.root);
    crate::mounts::kill_hard(&servers);
    fix.remount();
    fix.check(|c| {
        c.stat("f").ok();
        c.read("f").ok();
    });
    if fix.imp.is_rcfs() {
        let up = fix.subject_upper().join("f");
        for x in ["user.rcfs.metacopy", "user.rcfs.unflushed"] {
            assert!(sys::lgetxattr(&up, x).is_err(), "rcfs upper f: {x} left");
        }
    }
}

/// A copy-up that does not fit in the upper filesystem fails with ENOSPC
/// and loses nothing: the file still reads as the lower one, the space is
/// given back, and once there is room the same append works.
#[test]
fn copy_up_on_a_full_upper_fails_with_enospc_and_loses_nothing() {
    use crate::mounts::{self, cmd, run, Impl, Kind, Mount, COMMAND_TIMEOUT};
    use std::io::Write;
    mounts::require_privileges();
    let tmp = crate::harness::temp_dir();
    let base = tmp.path();
    let (lower, small, mnt) = (base.join("lower"), base.join("small"), base.join("mnt"));
    for d in [&lower, &small, &mnt] {
        std::fs::create_dir(d).unwrap();
    }
    let data = pattern(16 << 20, 7);
    std::fs::write(lower.join("big"), &data).unwrap();
    run(
        cmd("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs"]).arg(&small),
        COMMAND_TIMEOUT,
    )
    .expect_ok("mounting a small tmpfs");
    let _small = Mount::adopt(&small, None, Kind::Kernel);
    let (upper, work) = (small.join("upper"), small.join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let mut m = Mount::subject(
        Impl::Rcfs,
        std::slice::from_ref(&lower),
        Some((&upper, &work)),
        &mnt,
    );
    // A write-only append copies no data at once (passthrough), but the
    // space the data needs is reserved first: on a full upper it fails as
    // a copy-up would, and the file stays readable, also after a remount.
    let append_only = || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("big"))
            .and_then(|mut f| f.write_all(b"x\n"))
    };
    let e = append_only().expect_err("a write-only append needing 16 MiB in 8 MiB succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "append error: {e}");
    assert!(
        std::fs::read(mnt.join("big")).unwrap() == data,
        "the file changed (or cannot be read) after a failed append"
    );
    m.unmount().expect_ok("rcfs umount");
    std::mem::forget(m);
    m = Mount::subject(Impl::Rcfs, &[lower], Some((&upper, &work)), &mnt);
    assert!(
        std::fs::read(mnt.join("big")).unwrap() == data,
        "after a remount the file cannot be read as it was"
    );
    // Read and write: a write-only append would copy no data.
    let append = || {
        std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(mnt.join("big"))
            .and_then(|mut f| f.write_all(b"tail"))
    };
    let e = append().expect_err("a 16 MiB copy-up into 8 MiB succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "copy-up error: {e}");
    assert!(
        std::fs::read(mnt.join("big")).unwrap() == data,
        "the file changed after a failed copy-up"
    );
    let st = sys::statvfs(&small).unwrap();
    let free = st.f_bavail * st.f_frsize;
    assert!(
        free > 6 << 20,
        "the failed copy-up kept {} bytes of the upper filesystem",
        (8 << 20) - free
    );
    run(
        cmd("mount", ["-o", "remount,size=64m"]).arg(&small),
        COMMAND_TIMEOUT,
    )
    .expect_ok("growing the tmpfs");
    append().expect("append once there is room");
    let got = std::fs::read(mnt.join("big")).unwrap();
    assert!(
        got.len() == data.len() + 4 && got[..data.len()] == data[..] && got.ends_with(b"tail"),
        "wrong bytes after the copy-up"
    );
    m.unmount().expect_ok("rcfs umount");
}
