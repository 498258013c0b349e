//! rename(2) and renameat2(2) of files, symlinks and dirs.

use std::path::{Path, PathBuf};

use crate::harness::{assert_no_problems, standard_fixture};
use crate::snapshot::Snapshot;

#[test]
fn rename_lower_file_to_new_name() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.rename("lf", "lf-renamed").ok();
        c.read("lf-renamed").ok();
        c.stat("lf").ok();
        c.rename("md/lf", "md/lf-renamed").ok();
        c.rename("tf", "wd/x").ok();
        c.read("wd/x").ok();
        c.readdir("").ok();
        c.readdir("md").ok();
        // The old name can be used again.
        c.write_file("lf", "new lf").ok();
        c.read("lf").ok();
        c.read("lf-renamed").ok();
    });
}

#[test]
fn rename_files_over_existing_files() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.rename("lf", "tf").ok(); // lower over lower
        c.rename("uf", "both").ok(); // upper over both
        c.rename("md/lf", "md/uf").ok(); // lower over upper
        c.rename("md/both", "md/tf").ok(); // both over lower
        c.rename("owned", "ud/f").ok(); // lower over upper, across dirs
        for p in [
            "lf", "tf", "uf", "both", "md/lf", "md/uf", "md/both", "md/tf", "owned", "ud/f",
        ] {
            c.stat(p).ok();
        }
        for p in ["tf", "both", "md/uf", "md/tf", "ud/f"] {
            c.read(p).ok();
        }
    });
}

#[test]
fn rename_files_across_dirs() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.rename("lf", "ld/sub/lf").ok(); // into a lower-only dir
        c.rename("ld/f", "ud/f2").ok(); // lower-only dir to upper dir
        c.rename("md/tf", "ledir/tf").ok();
        c.rename("uf", "md/uf2").ok();
        c.rename("lsym", "ld/lsym").ok();
        c.readlink("ld/lsym").ok();
        c.read("ld/lsym").ok(); // relative target "lf": now ld/lf, missing
        c.rename("usym", "wd/usym").ok();
        for d in ["", "ld", "ld/sub", "ud", "md", "ledir", "wd"] {
            c.readdir(d).ok();
        }
    });
}

#[test]
fn rename_errors() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.rename("lf", "ld").ok(); // file over dir: EISDIR
        c.rename("ud", "uf").ok(); // dir over file: ENOTDIR
        c.rename("ud", "md").ok(); // dir over non-empty dir: ENOTEMPTY
        c.rename("ud", "ud/sub").ok(); // into itself: EINVAL
        c.rename("missing", "x").ok();
        c.rename("wd/x", "x").ok(); // whited-out source: ENOENT
        c.rename("lf", "missing/x").ok();
        c.rename("lf", "lf").ok(); // same name: no-op
        c.rename("lsym", "lf").ok(); // a symlink over its own target
        c.readlink("lf").ok();
        c.stat("lsym").ok();
    });
}

#[test]
fn rename_upper_dirs() {
    let fix = standard_fixture();
    fix.check(|c| {
        c.rename("ud", "ud2").ok();
        c.readdir("ud2").ok();
        c.read("ud2/f").ok();
        c.stat("ud").ok();
        c.rename("ud2", "ld/ud3").ok(); // into a lower-only dir
        c.readdir("ld/ud3").ok();
        c.rename("uedir", "wd").ok(); // over an empty merged dir (all whited out)
        c.readdir("wd").ok();
        c.mkdir("newdir", 0o755).ok();
        c.write_file("newdir/x", "x").ok();
        c.rename("newdir", "ledir").ok(); // over an empty lower dir
        c.readdir("ledir").ok();
        c.read("ledir/x").ok();
        c.mkdir("ud", 0o755).ok();
        c.readdir("ud").ok();
    });
}

/// Maps a snapshot of a tree to what it must be after `from` moved to `to`.
fn moved(snap: &Snapshot, from: &Path, to: &Path) -> Snapshot {
    let mut out = Snapshot::default();
    for (p, e) in &snap.entries {
        let p: PathBuf = match p.strip_prefix(from) {
            Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
            Ok(rest) => to.join(rest),
            Err(_) => p.clone(),
        };
        out.entries.insert(p, e.clone());
    }
    out
}

/// Renaming a dir that comes from a lower layer (lower-only and merged):
/// kernel overlayfs without redirect_dir refuses with EXDEV; rcfs copies the
/// tree up and renames it. Checked on the subject alone: the tree moved
/// unchanged, the old name is gone, and both stay so.
#[test]
fn rename_lower_dirs_moves_the_whole_tree() {
    let fix = standard_fixture();
    // Document the kernel's side of the intended difference.
    let klog = crate::harness::Fixture::on_kernel(&fix, |c| {
        c.rename("ld", "ld-renamed").ok();
    });
    assert_eq!(
        klog,
        vec!["rename ld -> ld-renamed = Err(EXDEV)".to_string()],
        "kernel overlayfs changed behaviour"
    );
    if !fix.imp.is_rcfs() {
        eprintln!(
            "{}: renaming lower dirs is rcfs-only behaviour; not checked",
            fix.name()
        );
        return;
    }
    let before = fix.snapshot_subject();
    let log = fix.on_subject(|c| {
        c.rename("ld", "ld-renamed").ok();
        c.rename("md", "ud/md-renamed").ok();
        c.rename("wd", "wd-renamed").ok();
    });
    assert_eq!(
        log,
        vec![
            "rename ld -> ld-renamed = ()",
            "rename md -> ud/md-renamed = ()",
            "rename wd -> wd-renamed = ()"
        ],
        "rcfs: renaming lower dirs"
    );
    let mut expected = moved(&before, Path::new("ld"), Path::new("ld-renamed"));
    expected = moved(&expected, Path::new("md"), Path::new("ud/md-renamed"));
    expected = moved(&expected, Path::new("wd"), Path::new("wd-renamed"));
    let after = fix.snapshot_subject();
    assert_no_problems("rcfs", &after);
    let d = crate::snapshot::diff("expected", &expected, "rcfs", &after);
    assert!(d.is_empty(), "rcfs: tree after renaming lower dirs:\n{d}");
    // The old names are free and new dirs there are empty; the moved trees
    // are writable.
    let log = fix.on_subject(|c| {
        c.mkdir("ld", 0o755).ok();
        c.readdir("ld").ok();
        c.write_file("ld-renamed/sub/new", "n").ok();
        c.readdir("ld-renamed/sub").ok();
        c.readdir("ud/md-renamed").ok();
    });
    assert_eq!(
        log,
        vec![
            "mkdir ld 755 = ()",
            "readdir ld = []",
            "write_file ld-renamed/sub/new \"n\" = ()",
            "readdir ld-renamed/sub = [\"g\", \"new\"]",
            "readdir ud/md-renamed = [\"both\", \"lf\", \"tf\", \"uf\"]",
        ],
        "rcfs: after renaming lower dirs"
    );
}

#[test]
fn renameat2_noreplace() {
    let fix = standard_fixture();
    fix.check(|c| {
        let f = libc::RENAME_NOREPLACE;
        c.renameat2("lf", "tf", f, "NOREPLACE").ok();
        c.renameat2("lf", "uf", f, "NOREPLACE").ok();
        c.renameat2("uf", "both", f, "NOREPLACE").ok();
        c.renameat2("lf", "wd/x", f, "NOREPLACE").ok(); // whited-out target does not exist
        c.renameat2("tf", "new", f, "NOREPLACE").ok();
        c.renameat2("ud", "newdir", f, "NOREPLACE").ok();
        for p in ["lf", "tf", "uf", "both", "wd/x", "new"] {
            c.stat(p).ok();
        }
    });
}

#[test]
fn renameat2_exchange() {
    let fix = standard_fixture();
    fix.check(|c| {
        let x = libc::RENAME_EXCHANGE;
        c.renameat2("lf", "uf", x, "EXCHANGE").ok();
        c.renameat2("both", "md/lf", x, "EXCHANGE").ok();
        c.renameat2("tf", "usym", x, "EXCHANGE").ok();
        c.renameat2("uf", "uedir", x, "EXCHANGE").ok();
        c.renameat2("lf", "missing", x, "EXCHANGE").ok();
        c.renameat2("lf", "wd/x", x, "EXCHANGE").ok();
        for p in ["lf", "uf", "both", "md/lf", "tf", "usym", "uedir"] {
            c.stat(p).ok();
        }
        for p in ["lf", "uf", "both", "md/lf", "usym", "uedir"] {
            c.read(p).ok();
        }
    });
}
