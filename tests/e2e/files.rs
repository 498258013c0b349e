//! Creating, opening, writing, truncating and unlinking files, on every kind
//! of path of the standard layers (see `harness::standard`).

use crate::harness::{standard, standard_fixture, Fixture};
use crate::layers::Layer;
use crate::sys;

const CREATE: libc::c_int = libc::O_WRONLY | libc::O_CREAT;

#[test]
fn create_files_in_every_kind_of_dir() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in [
            "new",
            "ld/new",
            "ld/sub/new",
            "md/new",
            "ud/new",
            "wd/new",
            "ledir/new",
            "uedir/new",
        ] {
            c.write_file(p, format!("{p} contents")).ok();
            c.read(p).ok();
            c.stat(p).ok();
        }
        c.write_file("nodir/new", "x").ok();
        c.write_file("lf/new", "x").ok();
        c.readdir("md").ok();
    });
}

#[test]
fn open_creat_of_existing_file_keeps_its_data() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in ["lf", "tf", "uf", "both", "md/lf", "md/both", "owned"] {
            if let Ok(fd) = c.open(p, CREATE, 0o600, "O_WRONLY|O_CREAT") {
                c.fwrite(&fd, b"XY").ok();
            }
            c.read(p).ok();
            c.stat(p).ok();
        }
        // Through a symlink: the target is written.
        if let Ok(fd) = c.open("lsym", CREATE, 0o600, "O_WRONLY|O_CREAT") {
            c.fwrite(&fd, b"via link").ok();
        }
        c.read("lf").ok();
    });
}

#[test]
fn open_excl() {
    let fix = standard_fixture();
    fix.check(|c| {
        let excl = CREATE | libc::O_EXCL;
        for p in [
            "lf",
            "tf",
            "uf",
            "both",
            "md/lf",
            "ld",
            "lsym",
            "usym",
            "wd/x",
            "brand-new",
            "md/new",
        ] {
            if let Ok(fd) = c.open(p, excl, 0o640, "O_CREAT|O_EXCL") {
                c.fwrite(&fd, p.as_bytes()).ok();
            }
            c.stat(p).ok();
        }
        c.readdir("wd").ok();
    });
}

#[test]
fn open_trunc() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in ["lf", "tf", "uf", "both", "md/lf", "owned"] {
            if let Ok(fd) = c.open(p, libc::O_RDWR | libc::O_TRUNC, 0, "O_RDWR|O_TRUNC") {
                c.fstat(&fd).ok();
                c.fread(&fd).ok();
                c.fwrite(&fd, b"after trunc").ok();
            }
            c.read(p).ok();
        }
        // O_TRUNC with O_RDONLY on a lower file: the kernel truncates too.
        c.open(
            "md/both",
            libc::O_RDONLY | libc::O_TRUNC,
            0,
            "O_RDONLY|O_TRUNC",
        )
        .ok();
        c.read("md/both").ok();
        c.open(
            "ld",
            libc::O_RDWR | libc::O_TRUNC,
            0,
            "O_RDWR|O_TRUNC on a dir",
        )
        .ok();
    });
}

#[test]
fn open_append() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in ["lf", "tf", "uf", "both", "md/lf", "ld/sub/g"] {
            for chunk in [&b"one+"[..], b"two"] {
                if let Ok(fd) = c.open(p, libc::O_WRONLY | libc::O_APPEND, 0, "O_WRONLY|O_APPEND") {
                    c.fwrite(&fd, chunk).ok();
                    c.fstat(&fd).ok();
                }
            }
            c.read(p).ok();
        }
    });
}

#[test]
fn write_at_offsets_and_read_back_through_the_same_fd() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in ["lf", "md/both", "ld/f"] {
            if let Ok(fd) = c.open(p, libc::O_RDWR, 0, "O_RDWR") {
                c.pwrite(&fd, b"MID", 3).ok();
                c.pread(&fd, 100, 0).ok();
                // A hole past the end reads back as zeros.
                c.pwrite(&fd, b"END", 40).ok();
                c.pread(&fd, 100, 0).ok();
                c.lseek(&fd, 0, libc::SEEK_END).ok();
                c.fstat(&fd).ok();
            }
            c.read(p).ok();
        }
    });
}

/// fallocate of lower, upper and both files, through read-write and
/// write-only (append) fds: extending, keeping the size, punching a hole.
#[test]
fn fallocate_extends_reserves_and_punches() {
    let fix = standard_fixture();
    fix.check(|c| {
        for (p, flags) in [
            ("lf", libc::O_RDWR),
            ("md/both", libc::O_RDWR),
            ("ld/f", libc::O_WRONLY | libc::O_APPEND),
        ] {
            if let Ok(fd) = c.open(p, flags, 0, "open") {
                c.fallocate(&fd, 0, 0, 8192).ok();
                c.fstat(&fd).ok();
                c.fallocate(&fd, libc::FALLOC_FL_KEEP_SIZE, 8192, 65536)
                    .ok();
                c.fstat(&fd).ok();
                c.fallocate(
                    &fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    1,
                    2,
                )
                .ok();
            }
            c.read(p).ok();
            c.stat(p).ok();
        }
    });
}

/// A write through one fd is seen through another opened before it (and
/// before the copy-up). With passthrough, rcfs refuses the second open
/// instead: see `inodes::passthrough_refuses_copy_up_of_a_file_open_for_reading`.
/// copy_file_range between lower, upper and new files, into a write-only
/// open of a lower file (inside its data and past it), within one file,
/// and onto an append-only fd, as on kernel overlayfs.
#[test]
fn copy_file_range_everywhere() {
    const BIG: usize = (3 << 20) + 123;
    let bottom = Layer::new()
        .big_file("src", BIG)
        .big_file("target", 1 << 20)
        .big_file("wo", 1 << 20)
        .big_file("wo-end", 5000)
        .file("short", "short file");
    let upper = Layer::new().big_file("up", 100_000);
    let fix = Fixture::new(&[bottom], &upper);
    fix.check(|c| {
        let Ok(src) = c.open("src", libc::O_RDONLY, 0, "O_RDONLY") else {
            return;
        };
        // Lower to a new file, all of it, and past the end of the source.
        if let Ok(dst) = c.open(
            "new",
            libc::O_WRONLY | libc::O_CREAT,
            0o644,
            "O_WRONLY|O_CREAT",
        ) {
            c.copy_file_range(&src, 0, &dst, 0, BIG + 1000).ok();
            c.fstat(&dst).ok();
        }
        // Lower to a lower file opened read-write (copied up), and upper to it.
        if let Ok(dst) = c.open("target", libc::O_RDWR, 0, "O_RDWR") {
            c.copy_file_range(&src, 1 << 20, &dst, 4096, 300_000).ok();
            if let Ok(up) = c.open("up", libc::O_RDONLY, 0, "O_RDONLY") {
                c.copy_file_range(&up, 10, &dst, (1 << 20) + 50, 100_000)
                    .ok();
            }
            c.pread(&dst, 64, 4090).ok();
        }
        // Into a write-only open of a lower file: inside its data, then past it.
        if let Ok(dst) = c.open("wo", libc::O_WRONLY, 0, "O_WRONLY") {
            c.copy_file_range(&src, 7, &dst, 100, 5000).ok();
            c.copy_file_range(&src, 0, &dst, (1 << 20) + 10, 5000).ok();
        }
        if let Ok(dst) = c.open("wo-end", libc::O_WRONLY, 0, "O_WRONLY") {
            c.copy_file_range(&src, 0, &dst, 5000, 3000).ok();
        }
        // Within one file, and onto an append-only fd (EBADF).
        if let Ok(f) = c.open("up", libc::O_RDWR, 0, "O_RDWR") {
            c.copy_file_range(&f, 0, &f, 50_000, 20_000).ok();
        }
        if let Ok(dst) = c.open(
            "short",
            libc::O_WRONLY | libc::O_APPEND,
            0,
            "O_WRONLY|O_APPEND",
        ) {
            c.copy_file_range(&src, 0, &dst, 0, 100).ok();
        }
    });
}

#[test]
fn write_is_seen_through_an_fd_opened_before_copy_up() {
    let (lowers, upper) = standard();
    let fix = Fixture::without_passthrough(&lowers, &upper);
    fix.check(|c| {
        let r = c.open("tf", libc::O_RDONLY, 0, "O_RDONLY");
        let w = c.open("tf", libc::O_WRONLY, 0, "O_WRONLY");
        if let (Ok(r), Ok(w)) = (r, w) {
            c.fwrite(&w, b"TOP").ok();
            c.pread(&r, 100, 0).ok();
        }
    });
}

/// Reading a lower file copies nothing up.
#[test]
fn reading_a_lower_file_does_not_copy_it_up() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.read("lf").ok();
        c.read("md/lf").ok();
        c.read("ld/sub/g").ok();
        c.open("tf", libc::O_RDONLY, 0, "O_RDONLY").ok();
    });
    let upper = fix.subject_upper();
    for p in ["lf", "md/lf", "ld", "tf"] {
        assert!(
            !upper.join(p).exists(),
            "{}: reading {p} copied it up",
            fix.name()
        );
    }
}

#[test]
fn truncate_grow_and_shrink() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.truncate("lf", 4).ok();
        c.truncate("tf", 100).ok();
        c.truncate("uf", 0).ok();
        c.truncate("both", 3).ok();
        c.truncate("md/lf", 5000).ok();
        c.truncate("lsym", 2).ok();
        c.truncate("ld", 0).ok();
        c.truncate("missing", 0).ok();
        c.truncate("wd/x", 0).ok();
        if let Ok(fd) = c.open("md/tf", libc::O_RDWR, 0, "O_RDWR") {
            c.ftruncate(&fd, 2).ok();
            c.fread(&fd).ok();
            c.ftruncate(&fd, 10).ok();
            c.fstat(&fd).ok();
        }
        if let Ok(fd) = c.open("ld/f", libc::O_RDONLY, 0, "O_RDONLY") {
            c.ftruncate(&fd, 1).ok();
        }
        for p in ["lf", "tf", "uf", "both", "md/lf", "md/tf", "ld/f"] {
            c.read(p).ok();
        }
    });
}

#[test]
fn unlink_files_and_symlinks() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in [
            "lf", "tf", "uf", "both", "md/lf", "md/both", "md/uf", "lsym", "usym", "ld/sub/g",
        ] {
            c.unlink(p).ok();
            c.stat(p).ok();
        }
        for p in ["ld", "md", "missing", "wd/x", "lf/x", ".wh.lf"] {
            c.unlink(p).ok();
        }
        c.readdir("").ok();
        c.readdir("md").ok();
        c.readdir("ld/sub").ok();
    });
}

/// rcfs's upper format: deleting a lower entry leaves `.wh.NAME` in the
/// upper dir. The name can then be created again.
#[test]
fn unlink_of_lower_file_leaves_oci_whiteout_and_name_can_be_reused() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.unlink("lf").ok();
        c.unlink("md/lf").ok();
        c.unlink("both").ok();
        c.unlink("lsym").ok();
        c.exists("lf");
    });
    if fix.imp.is_rcfs() {
        let upper = fix.subject_upper();
        for p in [".wh.lf", "md/.wh.lf", ".wh.both", ".wh.lsym"] {
            let st = std::fs::symlink_metadata(upper.join(p))
                .unwrap_or_else(|e| panic!("rcfs upper has no {p}: {e}"));
            assert!(
                st.is_file() && st.len() == 0,
                "rcfs upper {p} is not an empty file: {st:?}"
            );
        }
        for p in ["lf", "md/lf", "both", "lsym"] {
            assert!(
                std::fs::symlink_metadata(upper.join(p)).is_err(),
                "rcfs upper still has {p} after unlink"
            );
        }
    }
    fix.check(|c| {
        c.write_file("lf", "reborn").ok();
        c.symlink("tf", "lsym").ok();
        c.mkdir("both", 0o755).ok();
        c.readdir("both").ok();
        c.mknod("md/lf", libc::S_IFIFO | 0o600, 0).ok();
        c.read("lf").ok();
        c.readlink("lsym").ok();
        c.readdir("").ok();
    });
    if fix.imp.is_rcfs() {
        // Recreated names must not still be hidden by their whiteouts after
        // a remount either: the upper holds the new entries.
        let upper = fix.subject_upper();
        assert_eq!(
            std::fs::read(upper.join("lf")).ok().as_deref(),
            Some(&b"reborn"[..]),
            "rcfs upper lf after re-create"
        );
    }
}

/// An unlinked file stays readable and writable through fds opened before.
#[test]
fn unlink_while_open() {
    let fix = standard_fixture();
    fix.check(|c| {
        let r = c.open("lf", libc::O_RDONLY, 0, "O_RDONLY");
        let w = c.open("md/both", libc::O_RDWR, 0, "O_RDWR");
        c.unlink("lf").ok();
        c.unlink("md/both").ok();
        if let Ok(r) = r {
            c.fread(&r).ok();
        }
        if let Ok(w) = w {
            c.pwrite(&w, b"still writable", 0).ok();
            c.pread(&w, 100, 0).ok();
            c.fstat(&w).ok();
        }
        c.stat("lf").ok();
        c.stat("md/both").ok();
    });
}

#[test]
fn symlink_and_readlink() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.readlink("lsym").ok();
        c.readlink("usym").ok();
        c.read("lsym").ok();
        c.symlink("../lf", "ld/up").ok();
        c.read("ld/up").ok();
        c.symlink("/absolute/dangling", "md/dangling").ok();
        c.readlink("md/dangling").ok();
        c.symlink("x", "lf").ok();
        c.symlink("x", "ld").ok();
        c.symlink("x", "wd/x").ok();
        c.readlink("wd/x").ok();
        c.readlink("lf").ok();
        c.symlink(&"t".repeat(1000), "long").ok();
        c.readlink("long").ok();
    });
}

#[test]
fn hard_link_files() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.link("uf", "ud/uf-link").ok();
        c.stat("uf").ok();
        c.link("lf", "lf-link").ok();
        c.stat("lf").ok();
        c.stat("lf-link").ok();
        c.link("md/both", "ld/both-link").ok();
        c.link("lsym", "lsym-link").ok();
        c.readlink("lsym-link").ok();
        c.link("ld", "ld-link").ok();
        c.link("lf", "tf").ok();
        c.link("wd/x", "x-link").ok();
        c.link("missing", "m-link").ok();
        // Writing through one name shows through the other.
        c.write_file("lf-link", "via link").ok();
        c.read("lf").ok();
        c.stat("lf").ok();
        c.unlink("lf").ok();
        c.stat("lf-link").ok();
    });
}

#[test]
fn mknod_fifo() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.mknod("fifo", libc::S_IFIFO | 0o640, 0).ok();
        c.mknod("ld/sub/fifo", libc::S_IFIFO | 0o600, 0).ok();
        c.mknod("md/fifo", libc::S_IFIFO | 0o644, 0).ok();
        c.mknod("lf", libc::S_IFIFO | 0o644, 0).ok();
        c.mknod("wd/x", libc::S_IFIFO | 0o644, 0).ok();
        c.mknod("regular", libc::S_IFREG | 0o600, 0).ok();
        for p in ["fifo", "ld/sub/fifo", "md/fifo", "wd/x", "regular"] {
            c.stat(p).ok();
        }
    });
}

/// Names of the longest length a filesystem allows (255 bytes): deleting or
/// renaming away such a lower entry needs a whiteout for it, which the OCI
/// spelling `.wh.NAME` cannot express (259 bytes); kernel overlayfs
/// (char 0/0 whiteouts) has no such limit, and statfs promises 255.
#[test]
fn lower_entries_with_longest_names() {
    let long_f = "f".repeat(255);
    let long_d = "d".repeat(255);
    let long_r = "r".repeat(255);
    let bottom = Layer::new()
        .file(&long_f, "long name")
        .file(&format!("{long_d}/x"), "x")
        .file(&long_r, "to rename")
        .file("short", "s");
    let fix = crate::harness::Fixture::new(&[bottom], &crate::layers::Layer::new());
    fix.check(|c| {
        c.readdir("").ok();
        c.unlink(&long_f).ok();
        c.stat(&long_f).ok();
        c.unlink(&format!("{long_d}/x")).ok();
        c.rmdir(&long_d).ok();
        c.stat(&long_d).ok();
        c.rename(&long_r, "renamed").ok();
        c.stat(&long_r).ok();
        c.rename("short", &"s".repeat(255)).ok();
        c.write_file(&"n".repeat(256), "too long").ok();
        c.readdir("").ok();
    });
}

/// `open(O_RDONLY | O_TRUNC)` truncates on Linux whatever the access mode;
/// a lower file too (the unionmount-testsuite's open-trunc cases).
#[test]
fn read_only_open_with_o_trunc_truncates() {
    let (lowers, upper) = standard();
    let fix = Fixture::new(&lowers, &upper);
    fix.check(|c| {
        for p in ["lf", "uf", "both", "md/lf"] {
            c.open(p, libc::O_RDONLY | libc::O_TRUNC, 0, "O_RDONLY|O_TRUNC")
                .ok();
            c.stat(p).ok();
        }
        // Through a symlink to a lower file.
        c.open(
            "lsym",
            libc::O_RDONLY | libc::O_TRUNC,
            0,
            "O_RDONLY|O_TRUNC",
        )
        .ok();
        c.read("lf").ok();
    });
}

/// A character device 0/0 is how overlayfs spells a whiteout: creating one
/// is refused (EPERM), as kernel overlayfs does, rather than accepted and
/// lost at the next mount.
#[test]
fn mknod_of_a_0_0_char_device_is_refused() {
    let lower = Layer::new().file("lf", "lower file\n").file("ld/f", "f");
    let mut fix = Fixture::new(&[lower], &Layer::new().file("uf", "upper"));
    fix.check(|c| {
        c.mknod("dev00", libc::S_IFCHR | 0o644, 0).ok();
        c.mknod("ld/dev00", libc::S_IFCHR | 0o644, 0).ok();
        c.mknod("lf", libc::S_IFCHR | 0o644, 0).ok();
        c.mknod("dev11", libc::S_IFCHR | 0o644, sys::makedev(1, 1))
            .ok();
        c.readdir("").ok();
    });
    fix.remount();
    fix.check_trees();
}

/// A running program cannot be truncated by an open (ETXTBSY), and nothing
/// of it is lost: the kernel checks this only after the open, so rcfs must
/// refuse before it truncates.
#[test]
fn truncating_open_of_a_running_program_is_refused() {
    let (lowers, upper) = standard();
    let fix = Fixture::new(&lowers, &upper);
    let sleep = std::fs::read("/bin/sleep").unwrap();
    for root in [&fix.kernel.root, &fix.subject.root] {
        let prog = root.join("prog");
        std::fs::write(&prog, &sleep).unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut child = std::process::Command::new(&prog).arg("10").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        for flags in [
            libc::O_RDONLY | libc::O_TRUNC,
            libc::O_WRONLY | libc::O_TRUNC,
            libc::O_RDWR,
        ] {
            let r = sys::open(&prog, flags, 0);
            assert_eq!(
                r.err(),
                Some(sys::Errno::ETXTBSY),
                "{}: open({flags:#o}) of a running program",
                root.display()
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            std::fs::read(&prog).unwrap(),
            sleep,
            "{}: the running program lost its data",
            root.display()
        );
    }
}
