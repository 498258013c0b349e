//! What a mount wrote reads back the same after unmount and mount again:
//! rcfs reading its own upper dir (whiteouts, opaque dirs, metadata-only
//! copies, renamed lower dirs).

use crate::harness::{standard, Fixture};
use crate::layers::Layer;

#[test]
fn changes_survive_remount() {
    let (mut lowers, upper) = standard();
    lowers[1] = lowers[1].clone().big_file("big", 1 << 20);
    let mut fix = Fixture::new(&lowers, &upper);
    let changes = |c: &mut crate::ops::Ops| {
        c.unlink("lf").ok();
        c.unlink("md/lf").ok();
        c.rmdir("wd").ok();
        c.unlink("ld/f").ok();
        c.unlink("ld/sub/g").ok();
        c.rmdir("ld/sub").ok();
        c.rmdir("ld").ok();
        c.mkdir("ld", 0o700).ok();
        c.write_file("ld/new", "in the new ld").ok();
        c.rename("tf", "ud/tf").ok();
        c.rename("md/both", "both2").ok();
        c.chmod("owned", 0o600).ok();
        c.chmod("big", 0o600).ok();
        c.lchown("lsym", 3, 4).ok();
        c.setxattr("ledir", "user.new", b"v", 0).ok();
        c.removexattr("owned", "user.x").ok();
        c.link("uf", "uf-link").ok();
        c.symlink("md", "md-link").ok();
        c.mknod("md/fifo", libc::S_IFIFO | 0o600, 0).ok();
        c.truncate("both", 4).ok();
        c.write_file("md/new", "new in md").ok();
    };
    fix.check(changes);
    fix.remount();
    fix.check_trees();
    // And it goes on working: a metadata-only copy gets its data, names
    // deleted before the remount can be made again.
    fix.check(|c| {
        if let Ok(fd) = c.open("big", libc::O_WRONLY | libc::O_APPEND, 0, "O_APPEND") {
            c.fwrite(&fd, b"tail").ok();
        }
        c.read("big").ok();
        c.write_file("lf", "lf again").ok();
        c.mkdir("wd", 0o755).ok();
        c.readdir("wd").ok();
        c.unlink("md/tf").ok();
        c.readdir("md").ok();
    });
    fix.remount();
    fix.check_trees();
}

/// rcfs-only (kernel overlayfs refuses with EXDEV): a renamed lower dir
/// stays renamed across a remount, and its old name stays gone.
#[test]
fn renamed_lower_dir_survives_remount() {
    let bottom = Layer::new()
        .file("d/a", "a")
        .file("d/sub/b", "b")
        .file("keep", "k");
    let mut fix = Fixture::new(&[bottom], &Layer::new());
    if !fix.imp.is_rcfs() {
        eprintln!(
            "{}: renaming lower dirs is rcfs-only behaviour; not checked",
            fix.name()
        );
        return;
    }
    let log = fix.on_subject(|c| {
        c.rename("d", "e").ok();
    });
    assert_eq!(log, ["rename d -> e = ()"], "rcfs: renaming a lower dir");
    let before = fix.snapshot_subject();
    fix.remount();
    let after = fix.snapshot_subject();
    let d = crate::snapshot::diff("before remount", &before, "after remount", &after);
    assert!(
        d.is_empty(),
        "rcfs: renamed lower dir changed across remount:\n{d}"
    );
    assert!(
        !after.entries.contains_key(std::path::Path::new("d")),
        "rcfs: old name d back after remount"
    );
}
