//! The rootless path: rcfs run by an unprivileged uid, mounting through
//! fusermount3 (setuid) or inside its own user namespace, with the kernel
//! checking permissions (default_permissions).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{lay_out, temp_dir};
use crate::layers::{Layer, Reader};
use crate::mounts::{
    self, is_mountpoint, run, wait_daemons_gone, Impl, Kind, Mount, Run, COMMAND_TIMEOUT,
    FUSE_OVERLAYFS, RCFS,
};

/// The unprivileged uid and gid (nobody/nogroup).
const NOBODY: u32 = 65534;

/// `setpriv` to NOBODY, then `args`.
fn as_nobody<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
    ]);
    c.args(args);
    c.env("HOME", "/tmp");
    c
}

fn sh_as_nobody(script: &str) -> Run {
    run(&mut as_nobody(&["sh", "-c", script]), COMMAND_TIMEOUT)
}

struct Setup {
    _tmp: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

/// Layers owned by NOBODY, as a rootless user's unpacked layers are, but for
/// `secret` (root, 0600) and `rootfile` (root, 0644); upper/work/mnt owned by
/// NOBODY.
fn setup(imp: Impl) -> Setup {
    mounts::require_privileges();
    // Unprivileged FUSE mounts need to open /dev/fuse.
    std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))
        .expect("chmod 666 /dev/fuse");
    let tmp = temp_dir();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bottom = Layer::new()
        .file("lf", "lower file\n")
        .file("gone", "to delete\n")
        .file_mode("secret", "root only\n", 0o600)
        .file("ld/f", "ld/f\n")
        .file("rootfile", "owned by root, 0644\n");
    let top = Layer::new().file("tf", "top\n").whiteout("ld/f");
    let (lowers, upper, work, mnt) = lay_out(
        &tmp.path().join("l"),
        &[top, bottom],
        None,
        Reader::Subject(imp),
    );
    for d in lowers.iter().chain([&upper, &work, &mnt]) {
        run(
            Command::new("chown")
                .arg("-hR")
                .arg(format!("{NOBODY}:{NOBODY}"))
                .arg(d),
            COMMAND_TIMEOUT,
        )
        .expect_ok("chown");
    }
    for f in ["secret", "rootfile"] {
        std::os::unix::fs::lchown(lowers[1].join(f), Some(0), Some(0)).unwrap();
    }
    Setup {
        _tmp: tmp,
        lowers,
        upper,
        work,
        mnt,
    }
}

fn mount_args(imp: Impl, s: &Setup) -> Vec<String> {
    let lower = s
        .lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let (u, w, m) = (
        s.upper.display().to_string(),
        s.work.display().to_string(),
        s.mnt.display().to_string(),
    );
    match imp {
        Impl::Rcfs => vec![
            RCFS.into(),
            "mount".into(),
            "--lower".into(),
            lower,
            "--upper".into(),
            u,
            "--work".into(),
            w,
            m,
        ],
        Impl::FuseOverlayfs => vec![
            FUSE_OVERLAYFS.into(),
            "-o".into(),
            format!("lowerdir={lower},upperdir={u},workdir={w}"),
            m,
        ],
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// rcfs started by uid 65534 with setpriv: reads, a write, a delete, the
/// kernel's permission checks, and `fusermount3 -u`.
#[test]
fn rootless_mount_with_fusermount() {
    let imp = Impl::from_env();
    let s = setup(imp);
    let unmount = Kind::Fuse {
        unmount: [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "fusermount3",
            "-u",
        ]
        .map(String::from)
        .to_vec(),
    };
    run(&mut as_nobody(&mount_args(imp, &s)), COMMAND_TIMEOUT)
        .expect_ok(&format!("{imp:?} mount as uid {NOBODY}"));
    let m = Mount::adopt(&s.mnt, Some((&s.upper, &s.work)), unmount);
    assert!(
        is_mountpoint(&s.mnt),
        "mount as uid {NOBODY} exited 0 but nothing is mounted"
    );
    let mnt = q(&s.mnt);

    let r = sh_as_nobody(&format!("cat {mnt}/lf {mnt}/tf && ls -A {mnt} {mnt}/ld"))
        .expect_ok("reading as nobody");
    assert_eq!(
        r.stdout,
        format!(
            "lower file\ntop\n{}:\ngone\nld\nlf\nrootfile\nsecret\ntf\n\n{}/ld:\n",
            s.mnt.display(),
            s.mnt.display()
        )
    );
    sh_as_nobody(&format!(
        "echo hi > {mnt}/new && rm {mnt}/gone && mkdir {mnt}/ld/sub"
    ))
    .expect_ok("writing as nobody");
    let r = sh_as_nobody(&format!(
        "cat {mnt}/new; ls -A {mnt}; stat -c '%u %g %a' {mnt}/new {mnt}/ld/sub"
    ))
    .expect_ok("reading back as nobody");
    let expected = "hi\nld\nlf\nnew\nrootfile\nsecret\ntf\n65534 65534 644\n65534 65534 755\n";
    assert_eq!(r.stdout, expected);
    // default_permissions: the kernel refuses what mode bits refuse.
    let r = sh_as_nobody(&format!("cat {mnt}/secret"));
    assert!(
        !r.success() && r.stderr.contains("Permission denied"),
        "nobody read a 0600 root file: {r:?}"
    );
    let r = sh_as_nobody(&format!("echo x >> {mnt}/rootfile"));
    assert!(
        !r.success() && r.stderr.contains("Permission denied"),
        "nobody wrote a 0644 root file: {r:?}"
    );
    let r = sh_as_nobody(&format!("chmod 666 {mnt}/rootfile"));
    assert!(!r.success(), "nobody chmod-ed a root file: {r:?}");

    m.unmount().expect_ok("fusermount3 -u as nobody");
    assert!(!is_mountpoint(&s.mnt), "still mounted after fusermount3 -u");
    assert!(
        wait_daemons_gone(&s.mnt, Duration::from_secs(5)),
        "daemon still running 5 s after fusermount3 -u"
    );

    // What the unprivileged daemon left in its upper dir.
    let new = std::fs::metadata(s.upper.join("new")).expect("upper has new");
    assert_eq!(
        (new.uid(), new.gid()),
        (NOBODY, NOBODY),
        "owner of upper/new"
    );
    assert_eq!(
        std::fs::read_to_string(s.upper.join("new")).unwrap(),
        "hi\n"
    );
    assert!(
        !s.upper.join("rootfile").exists()
            || std::fs::read_to_string(s.upper.join("rootfile")).unwrap()
                == "owned by root, 0644\n"
    );
    if imp.is_rcfs() {
        let wh =
            std::fs::symlink_metadata(s.upper.join(".wh.gone")).expect("rcfs upper has .wh.gone");
        assert!(
            wh.is_file() && wh.len() == 0,
            "rcfs upper .wh.gone is not an empty file"
        );
    }
}

/// rcfs mounting as root of its own user namespace (how `rcfs run` works):
/// no setuid helper involved.
#[test]
fn rootless_mount_in_user_namespace() {
    let imp = Impl::from_env();
    let s = setup(imp);
    let args: Vec<String> = mount_args(imp, &s)
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    let umount = match imp {
        Impl::Rcfs => format!("'{RCFS}' umount {}", q(&s.mnt)),
        Impl::FuseOverlayfs => format!("umount {}", q(&s.mnt)),
    };
    let mnt = q(&s.mnt);
    let script = format!(
        "set -e; {mount}; cat {mnt}/lf; echo hi > {mnt}/new; rm {mnt}/gone; ls -A {mnt}; stat -c '%u' {mnt}/new; {umount}; echo done",
        mount = args.join(" "),
    );
    // Cleans up a daemon the script left behind if it fails half-way.
    let _guard = Mount::adopt(
        &s.mnt,
        None,
        Kind::Fuse {
            unmount: vec!["true".into()],
        },
    );
    let r = run(
        &mut as_nobody(&["unshare", "-Urm", "sh", "-c", &script]),
        COMMAND_TIMEOUT,
    );
    assert!(
        r.success(),
        "rcfs in a user namespace failed ({}):\nstdout: {}\nstderr: {}",
        r.status,
        r.stdout,
        r.stderr
    );
    assert_eq!(
        r.stdout,
        "lower file\nld\nlf\nnew\nrootfile\nsecret\ntf\n0\ndone\n"
    );
    assert!(
        wait_daemons_gone(&s.mnt, Duration::from_secs(5)),
        "daemon still running 5 s after unmount in the namespace"
    );
    let new = std::fs::metadata(s.upper.join("new")).expect("upper has new");
    assert_eq!(
        new.uid(),
        NOBODY,
        "uid 0 of the namespace is {NOBODY} outside"
    );
    if imp.is_rcfs() {
        assert!(
            s.upper.join(".wh.gone").is_file(),
            "rcfs upper has no .wh.gone"
        );
    }
}
