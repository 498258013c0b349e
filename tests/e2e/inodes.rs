//! Inode numbers: stable for the mount's life, kept across copy-up; hard
//! links of a lower layer share one inode.
//!
//! Inode numbers differ between filesystems, so cases log what they imply
//! (`note("same ino", a == b)`) and both mounts must agree; rcfs must also
//! say `true` everywhere on its own.

use crate::harness::{standard, standard_fixture, Fixture};
use crate::layers::Layer;
use crate::ops::Ops;
use crate::sys;

fn ino(c: &Ops, p: &str) -> Option<u64> {
    c.raw_stat(p).ok().map(|st| st.st_ino)
}

/// Asserts that every `note` in the subject's log is `true`.
fn assert_notes_true(fix: &Fixture, log: &[String]) {
    for line in log.iter().filter(|l| l.starts_with("note ")) {
        assert!(line.ends_with("= true"), "{}: {line}", fix.name());
    }
}

#[test]
fn inode_numbers_stable_across_lookups_and_copy_up() {
    let fix = standard_fixture();
    let log = fix.check(|c| {
        let before: Vec<_> = [
            "lf", "tf", "md/lf", "ld", "ld/sub", "ld/sub/g", "md", "lsym", "owned",
        ]
        .iter()
        .map(|p| (*p, ino(c, p)))
        .collect();
        // Lookups again, after readdir.
        c.readdir("ld/sub").ok();
        for (p, i) in &before {
            c.note(
                &format!("{p}: same ino on a second lookup"),
                ino(c, p) == *i,
            );
        }
        c.chmod("lf", 0o600).ok(); // metadata copy-up
        if let Ok(fd) = c.open("tf", libc::O_WRONLY | libc::O_APPEND, 0, "O_APPEND") {
            c.fwrite(&fd, b"more").ok(); // data copy-up
        }
        c.write_file("md/lf", "rewritten").ok();
        c.write_file("ld/sub/new", "n").ok(); // copies up ld and ld/sub
        c.lchown("lsym", 5, 5).ok();
        c.setxattr("owned", "user.y", b"y", 0).ok();
        for (p, i) in &before {
            c.note(&format!("{p}: same ino after copy-up"), ino(c, p) == *i);
        }
        // The ino a readdir reports is the one lstat reports (d_ino check
        // is part of every snapshot, too).
        let ino_g = ino(c, "ld/sub/g");
        let listed = std::fs::read_dir(c.p("ld/sub"))
            .ok()
            .and_then(|rd| rd.flatten().find(|e| e.file_name() == "g"))
            .map(|e| std::os::unix::fs::DirEntryExt::ino(&e));
        c.note("ld/sub/g: d_ino == st_ino", listed == ino_g);
    });
    if fix.imp.is_rcfs() {
        assert_notes_true(&fix, &log);
    }
}

#[test]
fn inode_numbers_stable_across_rename() {
    let fix = standard_fixture();
    let log = fix.check(|c| {
        for (from, to) in [
            ("lf", "lf2"),
            ("uf", "ld/uf2"),
            ("md/both", "both2"),
            ("lsym", "lsym2"),
        ] {
            let i = ino(c, from);
            c.rename(from, to).ok();
            c.note(&format!("{from} -> {to}: same ino"), ino(c, to) == i);
        }
    });
    if fix.imp.is_rcfs() {
        assert_notes_true(&fix, &log);
    }
}

/// An fd opened before a copy-up sees the same inode as the path after it.
#[test]
fn open_fd_and_path_agree_after_copy_up() {
    let (lowers, upper) = standard();
    let fix = Fixture::without_passthrough(&lowers, &upper);
    let log = fix.check(|c| {
        if let Ok(fd) = c.open("lf", libc::O_RDONLY, 0, "O_RDONLY") {
            c.write_file("lf", "copied up").ok();
            let fino = crate::sys::fstat(&fd).ok().map(|st| st.st_ino);
            c.note("fstat(fd).ino == lstat(path).ino", fino == ino(c, "lf"));
            c.fread(&fd).ok();
        }
    });
    if fix.imp.is_rcfs() {
        assert_notes_true(&fix, &log);
    }
}

#[test]
fn hard_links_in_lower_share_one_inode() {
    let bottom = Layer::new()
        .file("h1", "hard linked")
        .hardlink("h2", "h1")
        .hardlink("d/h3", "h1")
        .file("pair1", "pair")
        .hardlink("pair2", "pair1");
    let top = Layer::new().file("h1-top", "t");
    let fix = Fixture::new(&[top, bottom], &Layer::new());
    let log = fix.check(|c| {
        for p in ["h1", "h2", "d/h3", "pair1", "pair2"] {
            c.stat(p).ok(); // nlink 3 and 2
        }
        c.note("h1, h2 same ino", ino(c, "h1") == ino(c, "h2"));
        c.note("h1, d/h3 same ino", ino(c, "h1") == ino(c, "d/h3"));
        c.note("pair1, pair2 same ino", ino(c, "pair1") == ino(c, "pair2"));
        c.note("h1, pair1 differ", ino(c, "h1") != ino(c, "pair1"));
    });
    if fix.imp.is_rcfs() {
        assert_notes_true(&fix, &log);
    }
}

/// With FUSE passthrough (root, kernel 6.9+: as in CI) the kernel allows
/// one backing file per inode, and a lower file open for reading passes
/// through to the lower file. Opening it for writing meanwhile (two
/// processes on one SQLite database of an image) must still work, as on
/// kernel overlayfs: rcfs gives the copied-up file a new kernel inode. Its
/// writes are seen by every open that follows; the fd opened before keeps
/// reading what it read (on overlayfs it would see the writes).
#[test]
fn passthrough_file_open_for_reading_can_be_opened_for_writing() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let fix = standard_fixture();
    for root in [&fix.kernel.root, &fix.subject.root] {
        let lf = root.join("lf");
        let before = std::fs::read(&lf).unwrap();
        let reader = std::fs::File::open(&lf).unwrap();
        let mut buf = vec![0u8; before.len()];
        assert_eq!(reader.read_at(&mut buf, 0).unwrap(), before.len());
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&lf)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: open for writing while a reader has it: {e}",
                    root.display()
                )
            });
        w.write_all(b"now").unwrap();
        drop(w);
        assert_eq!(std::fs::read(&lf).unwrap(), b"now", "{}", root.display());
        // Through another fd opened for writing and a truncate(2) while
        // the first reader is still open.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&lf)
            .and_then(|mut f| f.write_all(b"+"))
            .unwrap();
        assert_eq!(std::fs::read(&lf).unwrap(), b"now+");
        assert!(reader.metadata().is_ok(), "fstat of the first reader");
        drop(reader);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&lf)
            .and_then(|mut f| f.write_all(b"+"))
            .unwrap();
        assert_eq!(std::fs::read(&lf).unwrap(), b"now++");
    }
    fix.check_trees();
}

/// close() returns before the kernel's RELEASE reaches the server: a file
/// read and closed, then at once opened for writing (a shell's `cat f;
/// echo x >> f`), must not be refused as if the reader were still there.
#[test]
fn write_right_after_closing_a_reader_is_not_refused() {
    use std::io::{Read, Write};
    const N: usize = 300;
    let mut bottom = Layer::new();
    for i in 0..N {
        bottom = bottom
            .file(&format!("f{i}"), "lower\n")
            .file(&format!("g{i}"), "lower\n");
    }
    let fix = Fixture::new(&[bottom], &Layer::new());
    for root in [&fix.kernel.root, &fix.subject.root] {
        for i in 0..N {
            let p = root.join(format!("f{i}"));
            let mut s = String::new();
            std::fs::File::open(&p)
                .and_then(|mut f| f.read_to_string(&mut s))
                .unwrap();
            std::fs::OpenOptions::new()
                .append(true)
                .open(&p)
                .and_then(|mut f| f.write_all(b"more\n"))
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: append to f{i} right after reading it: {e}",
                        root.display()
                    )
                });
            // The same with a copy-up by truncate(2) and a read after it.
            let p = root.join(format!("g{i}"));
            std::fs::read(&p).unwrap();
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C path.
            assert_eq!(unsafe { libc::truncate(c.as_ptr(), 3) }, 0, "truncate g{i}");
            let got = std::fs::read(&p)
                .unwrap_or_else(|e| panic!("{}: read g{i} after its copy-up: {e}", root.display()));
            assert_eq!(got, b"low");
        }
    }
    fix.check_trees();
}

/// A lower file with 1,501 hard links in 50 directories: a write through
/// one name is seen through every name, whether its directory was looked
/// at before the write or not, and all names stay one inode, also after a
/// remount. (Kernel overlayfs without its inode index answers otherwise,
/// just as consistently: the written name becomes a file of its own.)
#[test]
fn a_file_with_many_hard_links_stays_one_file() {
    const N: usize = 1501;
    let name = |i: usize| format!("d{}/f{i}", i % 50);
    let mut bottom = Layer::new().file(&name(0), "v1");
    for i in 1..N {
        bottom = bottom.hardlink(&name(i), &name(0));
    }
    let mut fix = Fixture::new(&[bottom], &Layer::new());
    if !fix.imp.is_rcfs() {
        return;
    }
    let root = fix.subject.root.clone();
    // Two directories are looked at before the write, the rest after.
    let before = ino_at(&root.join(name(0)));
    assert_eq!(ino_at(&root.join(name(51))), before);
    std::fs::OpenOptions::new()
        .append(true)
        .open(root.join(name(1)))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"+"))
        .unwrap();
    let check = |root: &std::path::Path, when: &str| {
        let ino = ino_at(&root.join(name(0)));
        for i in 0..N {
            let p = root.join(name(i));
            assert_eq!(std::fs::read(&p).unwrap(), b"v1+", "{when}: {}", name(i));
            assert_eq!(ino_at(&p), ino, "{when}: {} is another inode", name(i));
        }
        let st = sys::lstat(&root.join(name(7))).unwrap();
        assert_eq!(st.st_nlink as usize, N, "{when}: nlink");
    };
    check(&root, "after the write");
    fix.remount();
    check(&fix.subject.root.clone(), "after a remount");
}

fn ino_at(p: &std::path::Path) -> u64 {
    sys::lstat(p).unwrap().st_ino
}
