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
/// `rcfs-overlay` through `sh -c` with an empty environment, so it must be
/// on the shell's default PATH: the test links it into /usr/local/sbin
/// (CI runs as root on a fresh machine) for as long as it runs.
#[test]
fn mount_t_fuse_rcfs_overlay() {
    let (bin, name) = binary();
    let _link = SbinLink::new(bin, name);
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
        c.arg(m);
        run(&mut c, COMMAND_TIMEOUT).expect_ok(&format!("mount -t fuse.{name}"));
        let info = mount_info(m);
        assert!(
            matches!(&info, Some((fstype, _, _)) if fstype == &format!("fuse.{name}")),
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

/// `/usr/local/sbin/NAME` pointing at the binary under test while it
/// lives; a link that was there before is put back.
struct SbinLink {
    path: PathBuf,
    before: Option<PathBuf>,
}

impl SbinLink {
    fn new(bin: &str, name: &str) -> SbinLink {
        let path = Path::new("/usr/local/sbin").join(name);
        let before = std::fs::read_link(&path).ok();
        if before.is_none() && path.exists() {
            panic!(
                "{} exists and is not a symlink: the test would run it instead of {bin}; \
                 move it away to run this test",
                path.display()
            );
        }
        std::fs::create_dir_all("/usr/local/sbin").unwrap();
        let tmp = path.with_extension("rcfs-test-link");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(bin, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        SbinLink { path, before }
    }
}

impl Drop for SbinLink {
    fn drop(&mut self) {
        match &self.before {
            Some(old) => {
                let tmp = self.path.with_extension("rcfs-test-link");
                let _ = std::fs::remove_file(&tmp);
                if std::os::unix::fs::symlink(old, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, &self.path);
                }
            }
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// As root, fuse-overlayfs turns on `default_permissions,allow_other,suid,
/// noatime` by itself, and its mounts are of type `fuse.fuse-overlayfs`:
/// rcfs-overlay does the same (`fuse.rcfs-overlay`), so that through
/// `mount -t` or podman the mount is usable by a container's other uids.
#[test]
fn rcfs_overlay_as_root_turns_on_what_fuse_overlayfs_does() {
    let (bin, name) = binary();
    let fix = fixture(|l, uw, m| {
        run(
            cmd(bin, ["-o".into(), overlay_options(l, uw)]).arg(m),
            COMMAND_TIMEOUT,
        )
        .expect_ok("rcfs-overlay -o ... MNT");
        Mount::adopt(m, uw, fusermount())
    });
    let m = &fix.subject.root;
    let (fstype, _, super_opts) = mount_info(m).expect("mounted");
    assert_eq!(fstype, format!("fuse.{name}"));
    for o in ["default_permissions", "allow_other"] {
        assert!(
            super_opts.split(',').any(|x| x == o),
            "{name} as root: {o} is not on: {super_opts}"
        );
    }
    let opts = mount_options(m);
    assert!(
        opts.contains(&"noatime".to_string()),
        "{name}: not noatime: {opts:?}"
    );
    assert!(
        !opts.contains(&"nosuid".to_string()),
        "{name}: nosuid as root: {opts:?}"
    );
    // libfuse's default, which fuse-overlayfs keeps: device nodes in the
    // layers are not honoured unless `-o dev` is given.
    assert!(
        opts.contains(&"nodev".to_string()),
        "{name}: not nodev as root: {opts:?}"
    );
    // Another uid can read through it (the kernel checks its permissions).
    std::fs::set_permissions(
        fix.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let r = run(
        cmd(
            "setpriv",
            ["--reuid=65534", "--regid=65534", "--clear-groups", "cat"],
        )
        .arg(m.join("lf")),
        COMMAND_TIMEOUT,
    );
    assert!(r.success(), "uid 65534 cannot read through {name}: {r:?}");
}

/// The per-mount options (`noatime`, `nosuid`, ...) of the mount at `p`.
fn mount_options(p: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_str().unwrap();
    info.lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&want))
        .map(|f| f[5].split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}
