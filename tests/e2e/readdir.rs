//! The merged view before any write: which entries show, from which layer,
//! and that whiteout/opaque markers hide what they should and never show.

use crate::harness::{assert_no_problems, Fixture};
use crate::layers::{Layer, OpaqueForm, WhiteoutForm};

#[test]
fn readdir_merges_layers_without_duplicates() {
    let bottom = Layer::new()
        .file("a", "a from bottom")
        .file("b", "b from bottom")
        .file("d/x", "d/x from bottom")
        .file("d/only-bottom", "ob")
        .symlink("d/link", "x")
        .dir("empty-bottom")
        .fifo("pipe");
    let top = Layer::new()
        .file("a", "a from top")
        .file("c", "c from top")
        .file("d/y", "d/y from top")
        .file_mode("d/x", "d/x from top", 0o600)
        .dir_mode("d", 0o750);
    let upper = Layer::new()
        .file("a", "a from upper")
        .file("e", "e from upper")
        .file("d/z", "z")
        .file("d/x", "d/x from upper");
    let fix = Fixture::new(&[top, bottom], &upper);
    fix.check(|c| {
        c.readdir("").ok();
        c.readdir("d").ok();
        c.read("a").ok();
        c.read("d/x").ok();
        c.stat("d").ok();
        c.readlink("d/link").ok();
        c.stat("pipe").ok();
    });
    assert_no_problems(&fix.name(), &fix.snapshot_subject());
}

/// A name in a higher layer shadows it in every lower one, whatever the
/// types: the topmost entry wins; a dir only merges with dirs below it.
/// (Readdir *order* is not compared: kernel overlayfs lists the lowest
/// layer's entries first, and no order is promised.)
#[test]
fn upper_entries_shadow_lower_of_any_type() {
    let bottom = Layer::new()
        .file("file-over-dir/inner", "bottom dir")
        .file("dir-over-file", "bottom file")
        .file("link-over-file", "bottom file")
        .file("dir-over-dir/bottom", "b")
        .file("m/dir-over-dir-over-file", "b")
        .file("m/file-over-dir-over-dir/x", "b")
        .fifo("file-over-fifo");
    let top = Layer::new()
        .file("m/dir-over-dir-over-file/top", "t")
        .file("m/file-over-dir-over-dir/y", "t")
        .file("dir-over-dir/top", "t");
    let upper = Layer::new()
        .file("file-over-dir", "upper file")
        .file("dir-over-file/inner", "upper dir")
        .symlink("link-over-file", "dir-over-file")
        .file("dir-over-dir/upper", "u")
        .file("m/dir-over-dir-over-file/upper", "u")
        .file("m/file-over-dir-over-dir", "upper file")
        .file("file-over-fifo", "upper file");
    let fix = Fixture::new(&[top, bottom], &upper);
    fix.check(|c| {
        c.readdir("").ok();
        c.readdir("dir-over-dir").ok();
        c.readdir("m/dir-over-dir-over-file").ok();
        c.read("file-over-dir").ok();
        c.stat("file-over-dir/inner").ok();
        c.readdir("dir-over-file").ok();
        c.read("link-over-file/inner").ok();
        c.read("m/file-over-dir-over-dir").ok();
    });
}

/// A directory big enough to need several getdents calls (FUSE readdir
/// offsets), with entries in two lowers and the upper, and whiteouts.
#[test]
fn readdir_large_merged_dir() {
    let mut bottom = Layer::new();
    let mut top = Layer::new();
    let mut upper = Layer::new();
    for i in 0..400 {
        let long = "n".repeat(100);
        bottom = bottom.file(&format!("big/bottom-{i:04}-{long}"), "b");
        if i % 3 == 0 {
            top = top.file(&format!("big/bottom-{i:04}-{long}"), "t");
        }
        if i % 5 == 0 && (i + 1) % 3 != 0 {
            top = top.whiteout(&format!("big/bottom-{:04}-{long}", i + 1));
        }
        top = top.file(&format!("big/top-{i:04}"), "t");
        upper = upper.file(&format!("big/upper-{i:04}"), "u");
    }
    let fix = Fixture::new(&[top, bottom], &upper);
    fix.check(|c| {
        let names = c.readdir("big").unwrap();
        c.note("count", names.len());
    });
}

fn whiteout_layers(form: WhiteoutForm) -> [Layer; 2] {
    let bottom = Layer::new()
        .file("gone", "hidden")
        .file("kept", "kept")
        .file("dir/gone", "hidden")
        .file("dir/kept", "kept")
        .file("subtree/a/b", "hidden")
        .symlink("link", "kept")
        .fifo("fifo")
        .file("dir2/only", "hidden");
    let top = Layer::new()
        .whiteout_form("gone", form)
        .whiteout_form("dir/gone", form)
        .whiteout_form("subtree", form)
        .whiteout_form("link", form)
        .whiteout_form("fifo", form)
        .whiteout_form("never-existed", form)
        .dir("dir2")
        .whiteout_form("dir2/only", form);
    [top, bottom]
}

fn check_whiteouts(form: WhiteoutForm) {
    let fix = Fixture::new(&whiteout_layers(form), &Layer::new());
    fix.check(|c| {
        c.readdir("").ok();
        c.readdir("dir").ok();
        c.readdir("dir2").ok();
        for p in [
            "gone",
            "dir/gone",
            "subtree",
            "subtree/a",
            "link",
            "fifo",
            "never-existed",
        ] {
            c.stat(p).ok();
        }
        // The markers themselves never show, not even by name.
        for p in [
            ".wh.gone",
            "dir/.wh.gone",
            ".wh.subtree",
            ".wh.never-existed",
        ] {
            c.stat(p).ok();
        }
    });
    assert_no_problems(&fix.name(), &fix.snapshot_subject());
}

#[test]
fn whiteouts_oci_hide_lower_entries() {
    check_whiteouts(WhiteoutForm::Oci);
}

#[test]
fn whiteouts_char_device_hide_lower_entries() {
    check_whiteouts(WhiteoutForm::CharDev);
}

/// Whiteouts in the upper dir (the subject's own spelling) hide lower
/// entries too; a whiteout in a middle layer hides only layers below it.
#[test]
fn whiteouts_in_upper_and_middle_layers() {
    let bottom = Layer::new()
        .file("a", "bottom")
        .file("b", "bottom")
        .file("c", "bottom")
        .file("d/x", "bottom");
    let middle = Layer::new()
        .whiteout("a")
        .whiteout_form("d/x", WhiteoutForm::CharDev);
    let top = Layer::new()
        .file("a", "top resurrects a")
        .file("d/x", "top resurrects d/x");
    let upper = Layer::new()
        .whiteout_form("b", WhiteoutForm::Native)
        .whiteout_form("d/x", WhiteoutForm::Native);
    let fix = Fixture::new(&[top, middle, bottom], &upper);
    fix.check(|c| {
        c.readdir("").ok();
        c.readdir("d").ok();
        c.read("a").ok();
        c.stat("b").ok();
        c.read("c").ok();
        c.stat("d/x").ok();
    });
}

fn check_opaque(form: OpaqueForm) {
    let bottom = Layer::new()
        .file("o/hidden", "hidden")
        .file("o/sub/hidden", "hidden")
        .file("o/shadowed", "bottom")
        .xattr("o", "user.bottom", "b")
        .file("plain/kept", "kept");
    let middle = Layer::new()
        .opaque_form("o", form)
        .file("o/visible", "middle")
        .file("o/shadowed", "middle");
    let top = Layer::new().file("o/top", "top").dir("plain");
    let fix = Fixture::new(&[top, middle, bottom], &Layer::new());
    fix.check(|c| {
        c.readdir("o").ok();
        c.stat("o/hidden").ok();
        c.stat("o/sub").ok();
        c.read("o/shadowed").ok();
        c.stat(".wh..wh..opq").ok();
        c.stat("o/.wh..wh..opq").ok();
        c.listxattr("o").ok();
        c.readdir("plain").ok();
    });
    assert_no_problems(&fix.name(), &fix.snapshot_subject());
}

#[test]
fn opaque_dir_oci_marker() {
    check_opaque(OpaqueForm::Oci);
}

#[test]
fn opaque_dir_trusted_xattr() {
    check_opaque(OpaqueForm::TrustedXattr);
}

#[test]
fn opaque_dir_user_xattr() {
    check_opaque(OpaqueForm::UserXattr);
}

/// An opaque dir in the upper dir (the subject's own spelling) hides every
/// lower layer's entries of that dir.
#[test]
fn opaque_dir_in_upper() {
    let bottom = Layer::new()
        .file("o/hidden", "hidden")
        .file("o/x", "lower x");
    let upper = Layer::new()
        .opaque_form("o", OpaqueForm::Native)
        .file("o/x", "upper x")
        .file("o/new", "new");
    let fix = Fixture::new(&[bottom], &upper);
    fix.check(|c| {
        c.readdir("o").ok();
        c.stat("o/hidden").ok();
        c.read("o/x").ok();
    });
}

/// Ten layers: the topmost version of a name wins; whiteouts and opaque dirs
/// act only on the layers below them; a name whited out lower and re-added
/// higher is back.
#[test]
fn many_layers_stack_in_order() {
    let mut layers = Vec::new();
    for i in 0..10 {
        // i = 0 is the top layer.
        let mut l = Layer::new()
            .file(&format!("only{i}"), format!("only in layer {i}"))
            .file("d/common", format!("d/common from layer {i}"))
            .file(&format!("d/from{i}"), format!("{i}"));
        if i >= 2 {
            l = l.file("common", format!("common from layer {i}"));
        }
        match i {
            3 => {
                l = l
                    .whiteout("only7")
                    .whiteout("d/from8")
                    .whiteout_form("only9", WhiteoutForm::CharDev)
            }
            4 => l = l.opaque("d"),
            5 => {
                l = l
                    .opaque_form("deep/a", OpaqueForm::TrustedXattr)
                    .file("deep/a/five", "5")
            }
            6 => {
                l = l
                    .file("deep/a/six", "hidden by 5's opaque")
                    .file("deep/b/six", "6")
            }
            1 => l = l.file("only9", "only9 re-added in layer 1"),
            _ => {}
        }
        layers.push(l);
    }
    let fix = Fixture::new(&layers, &Layer::new());
    fix.check(|c| {
        c.readdir("").ok();
        c.readdir("d").ok();
        c.readdir("deep/a").ok();
        c.read("common").ok();
        c.read("d/common").ok();
        c.read("only9").ok();
        c.stat("only7").ok();
    });
    assert_no_problems(&fix.name(), &fix.snapshot_subject());
}

/// Every kind of node, with modes, owners and xattrs, as lower-only,
/// upper-only and both.
#[test]
fn node_kinds_and_metadata_show_through() {
    let bottom = Layer::new()
        .file_mode("suid", "x", 0o4755)
        .file_mode("sticky-dir/f", "f", 0o600)
        .dir_mode("sticky-dir", 0o1777)
        .owner("sticky-dir/f", 1000, 1001)
        .file("x", "x")
        .xattr("x", "user.a", "1")
        .xattr("x", "user.b", vec![0u8, 1, 2, 255])
        .symlink("abs", "/etc/passwd")
        .symlink("dangling", "no/such/target")
        .owner("abs", 1234, 4321)
        .fifo("fifo")
        .file("both", "lower")
        .xattr("both", "user.lower", "l");
    let upper = Layer::new()
        .file_mode("upper-exec", "#!/bin/sh\n", 0o755)
        .owner("upper-exec", 7, 8)
        .symlink("upper-link", "x")
        .file("both", "upper")
        .xattr("both", "user.upper", "u");
    let fix = Fixture::new(&[bottom], &upper);
    fix.check(|c| {
        c.listxattr("x").ok();
        c.getxattr("x", "user.b").ok();
        c.getxattr("x", "user.none").ok();
        c.listxattr("both").ok();
    });
}
