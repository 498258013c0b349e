//! `rcfs-overlay`, rcfs behind fuse-overlayfs's command line, in the three
//! ways container tools call it; each mount is then compared with the
//! kernel's on a few operations. (RCFS_E2E_IMPL=fuse-overlayfs runs
//! fuse-overlayfs here: same command line.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{standard, Fixture};
use crate::mounts::{
    cmd, is_mountpoint, mount_info, overlay_options, run, wait_daemons_gone, Impl, Kind, Mount,
    COMMAND_TIMEOUT, FUSE_OVERLAYFS, RCFS_OVERLAY,
};

/// The binary and the name mount(8) knows it by (`fuse.NAME`).
fn binary() -> (&'static str, &'static str) {
    match Impl::from_env() {
        Impl::Rcfs => (RCFS_OVERLAY, "rcfs-overlay"),
        Impl::FuseOverlayfs => (FUSE_OVERLAYFS, "fuse-overlayfs"),
    }
}

/// Some operations compared with the kernel, then rcfs's upper format,
/// then unmounting the way `kind` says ends the daemon.
fn exercise(fix: Fixture) {
    fix.check(|c| {
        c.readdir("").ok();
        c.read("lf").ok();
        c.read("md/both").ok();
        c.write_file("new", "new").ok();
        c.unlink("lf").ok();
        c.mkdir("ld/newdir", 0o755).ok();
        c.rename("tf", "md/tf2").ok();
        c.chmod("both", 0o600).ok();
        c.readdir("md").ok();
    });
    if fix.imp.is_rcfs() {
        let w = fix.subject_upper().join(".wh.lf");
        assert!(
            w.is_file(),
            "rcfs-overlay: no whiteout {} after unlink",
            w.display()
        );
    }
    let root = fix.subject.root.clone();
    fix.subject.unmount().expect_ok("unmounting rcfs-overlay");
    assert!(!is_mountpoint(&root), "still mounted after unmount");
    assert!(
        wait_daemons_gone(&root, Duration::from_secs(5)),
        "rcfs-overlay daemon still running 5 s after unmount"
    );
}

fn fixture(mount: impl FnOnce(&[PathBuf], Option<(&Path, &Path)>, &Path) -> Mount) -> Fixture {
    let (lowers, upper) = standard();
    Fixture::with_subject(&lowers, Some(&upper), mount)
}

fn fusermount() -> Kind {
    Kind::Fuse {
        unmount: vec!["fusermount3".into(), "-u".into()],
    }
}

#[test]
fn rcfs_overlay_dash_o_form() {
    let (bin, _) = binary();
    let fix = fixture(|l, uw, m| {
        run(
            cmd(bin, ["-o".into(), overlay_options(l, uw)]).arg(m),
            COMMAND_TIMEOUT,
        )
        .expect_ok("rcfs-overlay -o ... MNT");
        assert!(
            is_mountpoint(m),
            "rcfs-overlay exited 0 but nothing is mounted"
        );
        Mount::adopt(m, uw, fusermount())
    });
    exercise(fix);
}

#[test]
fn rcfs_overlay_mount_helper_form() {
    let (bin, _) = binary();
    let fix = fixture(|l, uw, m| {
        run(
            cmd(bin, ["overlay"])
                .arg(m)
                .arg("-o")
                .arg(overlay_options(l, uw)),
            COMMAND_TIMEOUT,
        )
        .expect_ok("rcfs-overlay overlay MNT -o ...");
        assert!(
            is_mountpoint(m),
            "rcfs-overlay exited 0 but nothing is mounted"
        );
        Mount::adopt(
            m,
            uw,
            Kind::Fuse {
                unmount: vec!["umount".into()],
            },
        )
    });
    exercise(fix);
}

/// `mount -t fuse.rcfs-overlay`: mount(8) runs mount.fuse3, which runs
/// `rcfs-overlay` from PATH; the test puts a symlink to it on PATH.
#[test]
fn mount_t_fuse_rcfs_overlay() {
    let (bin, name) = binary();
    let bin_dir = crate::harness::temp_dir();
    std::os::unix::fs::symlink(bin, bin_dir.path().join(name)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    let fix = fixture(|l, uw, m| {
        let mut c = cmd(
            "mount",
            [
                "-t".to_string(),
                format!("fuse.{name}"),
                "overlay".into(),
                "-o".into(),
                overlay_options(l, uw),
            ],
        );
        c.arg(m).env("PATH", &path);
        run(&mut c, COMMAND_TIMEOUT).expect_ok(&format!("mount -t fuse.{name}"));
        let info = mount_info(m);
        assert!(
            matches!(&info, Some((fstype, _, _)) if fstype.starts_with("fuse")),
            "mount -t fuse.{name} succeeded but mountinfo says {info:?}"
        );
        Mount::adopt(
            m,
            uw,
            Kind::Fuse {
                unmount: vec!["umount".into()],
            },
        )
    });
    exercise(fix);
}
