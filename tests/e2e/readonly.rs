//! A mount without an upper dir is read-only: reads work, writes fail EROFS.

use crate::harness::Fixture;
use crate::layers::Layer;

#[test]
fn mount_without_upper_is_read_only() {
    let bottom = Layer::new()
        .file("f", "lower")
        .file("d/g", "g")
        .symlink("s", "f")
        .xattr("f", "user.x", "x");
    let top = Layer::new().file("t", "top").whiteout("d/g");
    let fix = Fixture::read_only(&[top, bottom]);
    fix.check(|c| {
        c.read("f").ok();
        c.read("s").ok();
        c.readdir("d").ok();
        c.getxattr("f", "user.x").ok();
        c.open("f", libc::O_WRONLY, 0, "O_WRONLY").ok();
        c.open("f", libc::O_RDONLY | libc::O_TRUNC, 0, "O_RDONLY|O_TRUNC")
            .ok();
        c.write_file("new", "x").ok();
        c.truncate("f", 0).ok();
        c.unlink("f").ok();
        c.rmdir("d").ok();
        c.mkdir("nd", 0o755).ok();
        c.rename("f", "f2").ok();
        c.link("f", "f2").ok();
        c.symlink("f", "s2").ok();
        c.mknod("fifo", libc::S_IFIFO | 0o644, 0).ok();
        c.chmod("f", 0o600).ok();
        c.chown("f", 1, 1).ok();
        c.utimens("f", (1, 0), (1, 0), 0).ok();
        c.setxattr("f", "user.y", b"y", 0).ok();
        c.removexattr("f", "user.x").ok();
        let st = crate::sys::statvfs(&c.p(""));
        c.rec_with("statvfs ST_RDONLY".into(), st, |st| {
            format!("{}", st.f_flag & libc::ST_RDONLY != 0)
        })
        .ok();
    });
}
