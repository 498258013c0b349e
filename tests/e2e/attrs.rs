//! Metadata: chmod, chown, utimensat, xattrs; and fsync, statfs.

use crate::harness::standard_fixture;
use crate::sys::{UTIME_NOW, UTIME_OMIT};

const NOFOLLOW: libc::c_int = libc::AT_SYMLINK_NOFOLLOW;

#[test]
fn chmod_files_dirs_and_through_symlinks() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.chmod("lf", 0o600).ok();
        c.chmod("tf", 0o4755).ok();
        c.chmod("uf", 0o700).ok();
        c.chmod("both", 0o640).ok();
        c.chmod("md/lf", 0o400).ok();
        c.chmod("ld", 0o700).ok(); // lower dir: copied up
        c.chmod("md", 0o1777).ok();
        c.chmod("ld/sub/g", 0o444).ok(); // deep lower file
        c.chmod("lsym", 0o666).ok(); // follows to lf
        c.chmod("missing", 0o600).ok();
        c.chmod("wd/x", 0o600).ok();
        for p in [
            "lf", "tf", "uf", "both", "md/lf", "ld", "md", "ld/sub/g", "ld/sub", "lsym",
        ] {
            c.stat(p).ok();
        }
        if let Ok(fd) = c.open("owned", libc::O_RDONLY, 0, "O_RDONLY") {
            c.fchmod(&fd, 0o604).ok();
            c.fstat(&fd).ok();
        }
        c.read("ld/sub/g").ok();
        c.readdir("ld").ok();
    });
}

#[test]
fn chown_and_lchown() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.chown("lf", 1000, 2000).ok();
        c.chown("uf", 3000, 3000).ok();
        c.chown("both", u32::MAX, 55).ok(); // keep uid
        c.chown("owned", 0, u32::MAX).ok(); // keep gid
        c.chown("ld", 42, 43).ok();
        c.chown("lsym", 7, 7).ok(); // follows to lf
        c.lchown("usym", 8, 9).ok(); // the link itself
        c.lchown("md/both", 10, 11).ok();
        c.chown("missing", 1, 1).ok();
        for p in ["lf", "uf", "both", "owned", "ld", "lsym", "usym", "md/both"] {
            c.stat(p).ok();
        }
        // chown of a setuid file clears setuid, as everywhere.
        c.chmod("tf", 0o6755).ok();
        c.chown("tf", 1, 1).ok();
        c.stat("tf").ok();
    });
}

/// chown(f, -1, -1) changes nothing but f's ctime, which it moves: on
/// lower files (copied up, as the kernel does), upper files, dirs, fifos
/// and symlinks themselves.
#[test]
fn chown_to_the_same_owner_moves_ctime() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.mknod("fifo", libc::S_IFIFO | 0o644, 0).ok();
        let keep = u32::MAX;
        for (p, link) in [
            ("lf", false),
            ("uf", false),
            ("ld", false),
            ("md", false),
            ("fifo", false),
            ("usym", true),
            ("lsym", true),
        ] {
            let ctime =
                |c: &crate::ops::Ops| c.raw_stat(p).map(|st| (st.st_ctime, st.st_ctime_nsec));
            let before = ctime(c);
            std::thread::sleep(std::time::Duration::from_millis(20));
            if link {
                c.lchown(p, keep, keep).ok();
            } else {
                c.chown(p, keep, keep).ok();
            }
            let after = ctime(c);
            c.note(
                &format!("ctime of {p} moved"),
                before.is_ok() && before != after,
            );
            c.stat(p).ok();
        }
    });
}

#[test]
fn utimens_fixed_now_and_omit() {
    let fix = standard_fixture();
    fix.check(|c| {
        let t1 = (1_234_567_890, 500_000_000);
        let t2 = (1_111_111_111, 250);
        c.utimens("lf", t1, t2, 0).ok();
        c.times("lf").ok();
        c.utimens("uf", t2, t1, 0).ok();
        c.times("uf").ok();
        c.utimens("tf", (0, UTIME_OMIT), t1, 0).ok(); // atime untouched
        c.times("tf").ok();
        c.utimens("both", t1, (0, UTIME_OMIT), 0).ok(); // mtime untouched
        c.times("both").ok();
        c.utimens("md/lf", (0, UTIME_NOW), (0, UTIME_NOW), 0).ok();
        c.times("md/lf").ok();
        c.utimens("md/both", (0, UTIME_OMIT), (0, UTIME_NOW), 0)
            .ok();
        c.times("md/both").ok();
        c.utimens("ld", t1, t2, 0).ok(); // lower dir
        c.times("ld").ok();
        c.utimens("lsym", t2, t2, NOFOLLOW).ok(); // the link itself
        c.times("lsym").ok();
        c.times("lf").ok();
        c.utimens("usym", t1, t1, 0).ok(); // follows to uf
        c.times("uf").ok();
        c.utimens("missing", t1, t1, 0).ok();
        c.utimens("owned", (0, UTIME_OMIT), (0, UTIME_OMIT), 0).ok();
        c.times("owned").ok();
    });
}

#[test]
fn xattrs_set_get_list_remove() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in ["lf", "uf", "both", "ld", "md", "ud", "md/lf", "owned"] {
            c.setxattr(p, "user.new", b"value", 0).ok();
            c.getxattr(p, "user.new").ok();
            c.listxattr(p).ok();
        }
        // Flags.
        c.setxattr("owned", "user.x", b"again", libc::XATTR_CREATE)
            .ok();
        c.setxattr("owned", "user.x", b"replaced", libc::XATTR_REPLACE)
            .ok();
        c.setxattr("owned", "user.none", b"v", libc::XATTR_REPLACE)
            .ok();
        c.getxattr("owned", "user.x").ok();
        // Remove a lower xattr, a new one, a missing one.
        c.removexattr("owned", "user.x").ok();
        c.removexattr("lf", "user.new").ok();
        c.removexattr("lf", "user.none").ok();
        c.listxattr("owned").ok();
        c.listxattr("lf").ok();
        c.getxattr("owned", "user.x").ok();
        // Large and binary values, empty value.
        let big = vec![b'v'; 4000];
        c.setxattr("tf", "user.big", &big, 0).ok();
        c.getxattr("tf", "user.big").ok();
        c.setxattr("tf", "user.bin", &[0, 255, 0, 1], 0).ok();
        c.setxattr("tf", "user.empty", b"", 0).ok();
        c.getxattr("tf", "user.empty").ok();
        c.listxattr("tf").ok();
        // user.* xattrs are not allowed on symlinks.
        c.setxattr("lsym", "user.x", b"v", 0).ok();
        c.setxattr("missing", "user.x", b"v", 0).ok();
        c.getxattr("missing", "user.x").ok();
        c.read("owned").ok();
    });
}

#[test]
fn fsync_and_fdatasync() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in ["lf", "uf", "md/both"] {
            if let Ok(fd) = c.open(p, libc::O_RDWR | libc::O_APPEND, 0, "O_RDWR|O_APPEND") {
                c.fwrite(&fd, b"synced").ok();
                c.fsync(&fd).ok();
                c.fdatasync(&fd).ok();
            }
            c.read(p).ok();
        }
        // fsync of a read-only fd of a lower file, and of dirs.
        if let Ok(fd) = c.open("tf", libc::O_RDONLY, 0, "O_RDONLY") {
            c.fsync(&fd).ok();
        }
        for d in ["", "ld", "md", "ud"] {
            if let Ok(fd) = c.open(
                d,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
                "O_RDONLY|O_DIRECTORY",
            ) {
                c.fsync(&fd).ok();
            }
        }
    });
}

#[test]
fn statfs_works() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in ["", "ld", "md/lf", "uf"] {
            if let Ok(st) = c.statfs(p) {
                c.note(
                    &format!("statfs {p} sane"),
                    st.f_bsize > 0 && st.f_blocks > 0 && st.f_namelen >= 255,
                );
            }
        }
        c.statfs("missing").ok();
    });
}
