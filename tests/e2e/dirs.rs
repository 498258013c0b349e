//! mkdir, rmdir, and deleting whole lower trees.

use crate::harness::{standard_fixture, Fixture};
use crate::layers::Layer;

#[test]
fn mkdir_everywhere() {
    let fix = standard_fixture();
    fix.check(|c| {
        for p in [
            "new",
            "ld/new",
            "ld/sub/new",
            "md/new",
            "ud/new",
            "ledir/new",
            "wd/x",
        ] {
            c.mkdir(p, 0o750).ok();
            c.stat(p).ok();
            c.readdir(p).ok();
        }
        for p in [
            "lf",
            "ld",
            "md",
            "uf",
            "ud",
            "lsym",
            "usym",
            "missing/new",
            "lf/new",
        ] {
            c.mkdir(p, 0o755).ok();
        }
        c.mkdir("setgid", 0o2775).ok();
        c.stat("setgid").ok();
        c.write_file("new/file", "in a new dir").ok();
        c.readdir("md").ok();
        c.readdir("wd").ok();
    });
}

#[test]
fn rmdir_empty_and_non_empty() {
    let fix = standard_fixture();
    fix.check(|c| {
        // Empty in the merged view though its lower dir has (whited-out) entries.
        c.readdir("wd").ok();
        c.rmdir("wd").ok();
        c.rmdir("ledir").ok();
        c.rmdir("uedir").ok();
        c.rmdir("ld").ok();
        c.rmdir("md").ok();
        c.rmdir("ud").ok();
        c.rmdir("ld/sub").ok();
        c.rmdir("lf").ok();
        c.rmdir("lsym").ok();
        c.rmdir("missing").ok();
        c.rmdir("ld/f/x").ok();
        c.readdir("").ok();
        for p in ["wd", "ledir", "uedir"] {
            c.stat(p).ok();
        }
    });
}

/// Emptying a lower dir through the mount lets it be removed; a new dir of
/// the same name is empty (lower contents do not come back), and so is one
/// made over a lower dir deleted by a whiteout in a lower layer.
#[test]
fn delete_lower_dir_then_mkdir_gives_empty_dir() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.unlink("ld/f").ok();
        c.rmdir("ld/sub").ok();
        c.unlink("ld/sub/g").ok();
        c.rmdir("ld/sub").ok();
        c.rmdir("ld").ok();
        c.stat("ld").ok();
        c.mkdir("ld", 0o700).ok();
        c.readdir("ld").ok();
        c.stat("ld/f").ok();
        c.stat("ld/sub").ok();
        c.write_file("ld/f", "new f").ok();
        c.readdir("ld").ok();
        // The same with md, which has entries in both the lower and the upper.
        for p in ["md/lf", "md/tf", "md/uf", "md/both"] {
            c.unlink(p).ok();
        }
        c.readdir("md").ok();
        c.rmdir("md").ok();
        c.mkdir("md", 0o755).ok();
        c.readdir("md").ok();
        // A dir that replaces a file, and a file that replaces a dir.
        c.unlink("lf").ok();
        c.mkdir("lf", 0o755).ok();
        c.rmdir("ledir").ok();
        c.write_file("ledir", "now a file").ok();
    });
    if fix.imp.is_rcfs() {
        let upper = fix.subject_upper();
        assert!(upper.join("ld").is_dir(), "rcfs upper has no ld");
        let opaque = upper.join("ld/.wh..wh..opq").exists() || upper.join(".wh.ld").exists();
        assert!(
            opaque,
            "rcfs: recreated ld is neither opaque nor whited out in upper"
        );
    }
}

/// `rm -r` of trees from the lower layer, from the upper, and mixed.
#[test]
fn remove_whole_trees() {
    let mut bottom = Layer::new();
    for i in 0..5 {
        bottom = bottom
            .file(&format!("tree/a{i}/b/c/file{i}"), "x")
            .symlink(&format!("tree/a{i}/link"), "b");
    }
    let top = Layer::new()
        .file("tree/a0/b/top", "t")
        .whiteout("tree/a1/b");
    let upper = Layer::new()
        .file("tree/a2/b/c/upper", "u")
        .file("tree/a3/upper-only/x", "u");
    let fix = Fixture::new(&[top, bottom], &upper);
    fix.check(|c| {
        let r = std::fs::remove_dir_all(c.p("tree")).map_err(|e| e.raw_os_error());
        c.note("remove_dir_all tree", r);
        c.stat("tree").ok();
        c.mkdir("tree", 0o755).ok();
        c.readdir("tree").ok();
        c.mkdir("tree/a0", 0o755).ok();
        c.readdir("tree/a0").ok();
    });
}

/// An opaque dir in a lower layer, emptied and removed through the mount.
#[test]
fn rmdir_of_opaque_lower_dir() {
    let bottom = Layer::new().file("o/hidden", "h");
    let top = Layer::new().opaque("o").file("o/visible", "v");
    let fix = Fixture::new(&[top, bottom], &Layer::new());
    fix.check(|c| {
        c.rmdir("o").ok();
        c.unlink("o/visible").ok();
        c.readdir("o").ok();
        c.rmdir("o").ok();
        c.mkdir("o", 0o755).ok();
        c.readdir("o").ok();
    });
}
