//! The `rcfs mount` / `rcfs umount` command line: the daemon's life cycle
//! and its errors. These run rcfs itself, whatever RCFS_E2E_IMPL says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{lay_out, temp_dir};
use crate::layers::{Layer, Reader};
use crate::mounts::{
    self, cmd, is_mountpoint, run, wait_daemons_gone, Impl, Kind, Mount, COMMAND_TIMEOUT, RCFS,
};
use crate::sys;

struct Dirs {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn dirs() -> Dirs {
    mounts::require_privileges();
    let tmp = temp_dir();
    let base = tmp.path().to_path_buf();
    let layers = [
        Layer::new().file("top", "top\n"),
        Layer::new().file("bottom", "bottom\n"),
    ];
    let (lowers, upper, work, mnt) = lay_out(
        &base.join("rcfs"),
        &layers,
        None,
        Reader::Subject(Impl::Rcfs),
    );
    Dirs {
        _tmp: tmp,
        base,
        lowers,
        upper,
        work,
        mnt,
    }
}

fn lower_arg(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn rcfs_mount(lower: &str, upper: &Path, work: &Path, mnt: &Path) -> Command {
    let mut c = Command::new(RCFS);
    c.arg("mount")
        .arg("--lower")
        .arg(lower)
        .arg("--upper")
        .arg(upper)
        .arg("--work")
        .arg(work)
        .arg(mnt);
    c
}

/// Cleans up a mount a failing command might have made anyway.
fn guard(mnt: &Path) -> Mount {
    Mount::adopt(
        mnt,
        None,
        Kind::Fuse {
            unmount: vec![RCFS.into(), "umount".into()],
        },
    )
}

#[test]
fn mount_missing_lower_dir_fails_naming_it() {
    let d = dirs();
    let _g = guard(&d.mnt);
    let missing = d.base.join("no-such-layer");
    let lower = format!("{}:{}", d.lowers[0].display(), missing.display());
    let r = run(
        &mut rcfs_mount(&lower, &d.upper, &d.work, &d.mnt),
        COMMAND_TIMEOUT,
    );
    assert!(!r.success(), "rcfs mount with a missing lower dir exited 0");
    assert!(
        r.stderr.contains(&missing.display().to_string()),
        "error does not name the missing dir {}: {:?}",
        missing.display(),
        r.stderr
    );
    assert!(!is_mountpoint(&d.mnt), "rcfs mount failed but left a mount");
}

#[test]
fn mount_missing_mountpoint_fails_naming_it() {
    let d = dirs();
    let missing = d.base.join("no-such-mountpoint");
    let _g = guard(&missing);
    let r = run(
        &mut rcfs_mount(&lower_arg(&d.lowers), &d.upper, &d.work, &missing),
        COMMAND_TIMEOUT,
    );
    assert!(!r.success(), "rcfs mount on a missing mount point exited 0");
    assert!(
        r.stderr.contains(&missing.display().to_string()),
        "error does not name the missing mount point: {:?}",
        r.stderr
    );
}

#[test]
fn mount_missing_upper_dir_fails_naming_it() {
    let d = dirs();
    let _g = guard(&d.mnt);
    let missing = d.base.join("no-such-upper");
    let r = run(
        &mut rcfs_mount(&lower_arg(&d.lowers), &missing, &d.work, &d.mnt),
        COMMAND_TIMEOUT,
    );
    assert!(!r.success(), "rcfs mount with a missing upper dir exited 0");
    assert!(
        r.stderr.contains(&missing.display().to_string()),
        "error does not name the missing upper dir: {:?}",
        r.stderr
    );
    assert!(!is_mountpoint(&d.mnt), "rcfs mount failed but left a mount");
}

/// Copy-up renames from work into upper, so they must share a filesystem;
/// rcfs must refuse at mount time, not fail every later write.
#[test]
fn mount_upper_and_work_on_different_filesystems_fails() {
    let d = dirs();
    let _g = guard(&d.mnt);
    let tmpfs = d.base.join("tmpfs-work");
    std::fs::create_dir(&tmpfs).unwrap();
    run(
        cmd("mount", ["-t", "tmpfs", "tmpfs"]).arg(&tmpfs),
        COMMAND_TIMEOUT,
    )
    .expect_ok("mounting a tmpfs");
    let _t = Mount::adopt(&tmpfs, None, Kind::Kernel);
    let r = run(
        &mut rcfs_mount(&lower_arg(&d.lowers), &d.upper, &tmpfs, &d.mnt),
        COMMAND_TIMEOUT,
    );
    assert!(
        !r.success(),
        "rcfs mount with work on another filesystem than upper exited 0"
    );
    let err = r.stderr.to_lowercase();
    assert!(
        err.contains("work")
            && (err.contains("filesystem")
                || err.contains("file system")
                || err.contains("device")),
        "error does not say that work and upper are on different filesystems: {:?}",
        r.stderr
    );
    assert!(!is_mountpoint(&d.mnt), "rcfs mount failed but left a mount");
}

#[test]
fn umount_of_a_dir_that_is_not_mounted_fails() {
    let d = dirs();
    let r = run(cmd(RCFS, ["umount"]).arg(&d.mnt), COMMAND_TIMEOUT);
    assert!(!r.success(), "rcfs umount of a plain dir exited 0");
    assert!(
        !r.stderr.trim().is_empty(),
        "rcfs umount failed without a message"
    );
}

/// Background mode: returns once mounted; `rcfs umount` ends the daemon
/// and returns only once it has exited (its copy-ups flushed).
#[test]
fn umount_ends_the_daemon() {
    let d = dirs();
    let m = Mount::subject(Impl::Rcfs, &d.lowers, Some((&d.upper, &d.work)), &d.mnt);
    assert_eq!(
        std::fs::read_to_string(d.mnt.join("bottom")).unwrap(),
        "bottom\n"
    );
    assert!(
        !mounts::daemons_of(&d.mnt).is_empty(),
        "no process serving {} found",
        d.mnt.display()
    );
    // A copy-up whose flush may still be running when the unmount starts
    // (read and write: a write-only append would copy no data).
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(d.mnt.join("bottom"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more\n"))
        .unwrap();
    m.unmount().expect_ok("rcfs umount");
    assert!(!is_mountpoint(&d.mnt), "still mounted after rcfs umount");
    assert_eq!(
        mounts::daemons_of(&d.mnt),
        Vec::<i32>::new(),
        "rcfs umount returned while its daemon still ran"
    );
    assert!(
        sys::lgetxattr(&d.upper.join("bottom"), "user.rcfs.metacopy").is_err(),
        "copy-up not flushed when rcfs umount returned"
    );
    assert_eq!(
        std::fs::read_to_string(d.upper.join("bottom")).unwrap(),
        "bottom\nmore\n"
    );
}

/// Plain `umount` (what container tools use) also ends the daemon.
#[test]
fn system_umount_ends_the_daemon() {
    let d = dirs();
    let _m = Mount::subject(Impl::Rcfs, &d.lowers, Some((&d.upper, &d.work)), &d.mnt);
    run(&mut cmd("umount", [&d.mnt]), COMMAND_TIMEOUT).expect_ok("umount");
    assert!(
        wait_daemons_gone(&d.mnt, Duration::from_secs(5)),
        "rcfs daemon still running 5 s after umount"
    );
}

/// Kills the child on drop unless it was waited for.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn mount_foreground_serves_until_unmounted() {
    let d = dirs();
    let _g = guard(&d.mnt);
    let log = std::fs::File::create(d.base.join("fg.log")).unwrap();
    let child = rcfs_mount(&lower_arg(&d.lowers), &d.upper, &d.work, &d.mnt)
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning rcfs mount --foreground");
    let mut child = ChildGuard(Some(child));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while !is_mountpoint(&d.mnt) {
        if let Some(st) = child.0.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "rcfs mount --foreground exited ({st}) before mounting: {}",
                std::fs::read_to_string(d.base.join("fg.log")).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "rcfs mount --foreground did not mount within {COMMAND_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_to_string(d.mnt.join("top")).unwrap(), "top\n");
    std::fs::write(d.mnt.join("new"), "new").unwrap();
    run(cmd(RCFS, ["umount"]).arg(&d.mnt), COMMAND_TIMEOUT).expect_ok("rcfs umount");
    let mut c = child.0.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("rcfs mount --foreground still running 5 s after rcfs umount");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "rcfs mount --foreground exited {status} after umount: {}",
        std::fs::read_to_string(d.base.join("fg.log")).unwrap()
    );
    assert_eq!(std::fs::read_to_string(d.upper.join("new")).unwrap(), "new");
}

/// `--debug --log FILE`: the background server writes every operation to the
/// file, and the command still returns once the mount is ready.
#[test]
fn debug_log_goes_to_a_file_in_the_background() {
    let d = dirs();
    let log = d.base.join("rcfs.log");
    let _g = guard(&d.mnt);
    let mut c = rcfs_mount(&lower_arg(&d.lowers), &d.upper, &d.work, &d.mnt);
    c.arg("--debug").arg("--log").arg(&log);
    run(&mut c, COMMAND_TIMEOUT).expect_ok("rcfs mount --debug --log");
    assert!(
        is_mountpoint(&d.mnt),
        "not mounted after rcfs mount returned"
    );
    assert_eq!(std::fs::read_to_string(d.mnt.join("top")).unwrap(), "top\n");
    run(
        &mut cmd(RCFS, ["umount".into(), d.mnt.display().to_string()]),
        COMMAND_TIMEOUT,
    )
    .expect_ok("rcfs umount");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("lookup(1, \"top\")"),
        "no lookup of top in the log:\n{text}"
    );
    assert!(text.contains(" us]"), "no latencies in the log:\n{text}");
}

/// The server raises its open-file limit: every file a program holds open
/// through the mount is an open file in the server, and containers hold far
/// more than the usual soft limit of 1024.
#[test]
fn server_holds_more_open_files_than_the_default_limit() {
    use std::os::unix::process::CommandExt;
    const N: u64 = 3000;
    let d = dirs();
    let many = d.lowers[1].join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..N {
        std::fs::write(many.join(i.to_string()), "x").unwrap();
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert!(
        lim.rlim_max >= N + 200,
        "hard open-file limit {} too low for this test",
        lim.rlim_max
    );
    // This process may need more (raising is harmless to parallel tests).
    if lim.rlim_cur < N + 200 {
        let mine = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &mine) };
    }
    let _g = guard(&d.mnt);
    let mut mount = rcfs_mount(&lower_arg(&d.lowers), &d.upper, &d.work, &d.mnt);
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        mount.pre_exec(|| {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_cur = 1024;
            libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
            Ok(())
        });
    }
    run(&mut mount, COMMAND_TIMEOUT).expect_ok("rcfs mount");
    let files: Vec<std::fs::File> = (0..N)
        .map(|i| std::fs::File::open(d.mnt.join("many").join(i.to_string())))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("holding {N} files open through rcfs: {e}"));
    assert_eq!(files.len() as u64, N);
    drop(files);
    run(cmd(RCFS, ["umount"]).arg(&d.mnt), COMMAND_TIMEOUT).expect_ok("rcfs umount");
}

/// Refused before anything is mounted, with a message that names the
/// problem: a mountpoint inside or equal to a layer (the server would hang
/// serving its own mount), layers that overlap (writes would change a
/// read-only layer), empty layer names, and numbers out of range. Nothing
/// is mounted and no server is left behind.
#[test]
fn bad_setups_are_refused_with_a_clear_error() {
    let d = dirs();
    let lowers = lower_arg(&d.lowers);
    let inside_upper = d.upper.join("mnt");
    let inside_lower = d.lowers[0].join("mnt");
    std::fs::create_dir(&inside_upper).unwrap();
    std::fs::create_dir(&inside_lower).unwrap();
    let (u, w, m) = (&d.upper, &d.work, &d.mnt);
    let s = |p: &Path| p.display().to_string();
    let upper_in_lower = d.lowers[1].join("upper");
    std::fs::create_dir(&upper_in_lower).unwrap();
    let cases: Vec<(Vec<String>, &Path, &str)> = vec![
        // (arguments after `rcfs mount`, mountpoint to check, expected words)
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--upper".into(),
                s(u),
                "--work".into(),
                s(w),
                s(u),
            ],
            u,
            "mountpoint",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--upper".into(),
                s(u),
                "--work".into(),
                s(w),
                s(&inside_upper),
            ],
            &inside_upper,
            "inside",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--upper".into(),
                s(u),
                "--work".into(),
                s(w),
                s(&d.lowers[1]),
            ],
            &d.lowers[1],
            "mountpoint",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--upper".into(),
                s(u),
                "--work".into(),
                s(w),
                s(&inside_lower),
            ],
            &inside_lower,
            "inside",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--upper".into(),
                s(&d.lowers[0]),
                "--work".into(),
                s(w),
                s(m),
            ],
            m,
            "overlap",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--upper".into(),
                s(&upper_in_lower),
                "--work".into(),
                s(w),
                s(m),
            ],
            m,
            "overlap",
        ),
        (vec!["--lower".into(), "".into(), s(m)], m, "empty lower"),
        (
            vec![
                "--lower".into(),
                format!("{}::{}", s(&d.lowers[0]), s(&d.lowers[1])),
                s(m),
            ],
            m,
            "empty lower",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--timeout".into(),
                "99999999999999999999".into(),
                s(m),
            ],
            m,
            "timeout",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--timeout=-1".into(),
                s(m),
            ],
            m,
            "timeout",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--timeout".into(),
                "NaN".into(),
                s(m),
            ],
            m,
            "timeout",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--threads".into(),
                "100000".into(),
                s(m),
            ],
            m,
            "threads",
        ),
        (
            vec![
                "--lower".into(),
                lowers.clone(),
                "--threads".into(),
                "0".into(),
                s(m),
            ],
            m,
            "threads",
        ),
    ];
    for (args, mp, words) in cases {
        let _g = guard(mp);
        let r = run(Command::new(RCFS).arg("mount").args(&args), COMMAND_TIMEOUT);
        assert!(!r.success(), "rcfs mount {args:?} exited 0");
        assert!(
            r.stderr.to_lowercase().contains(words),
            "rcfs mount {args:?}: the error does not say {words:?}: {:?}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("panicked"),
            "rcfs mount {args:?} panicked: {}",
            r.stderr
        );
        assert!(
            !is_mountpoint(mp),
            "rcfs mount {args:?} failed but left a mount"
        );
    }
    // rcfs-overlay refuses the same through its own options.
    let r = run(
        Command::new(mounts::RCFS_OVERLAY)
            .arg("-o")
            .arg(format!(
                "lowerdir={lowers},upperdir={},workdir={}",
                s(u),
                s(w)
            ))
            .arg(u),
        COMMAND_TIMEOUT,
    );
    let _g = guard(u);
    assert!(!r.success() && r.stderr.contains("mountpoint"), "{r:?}");
    assert!(!is_mountpoint(u));
}

/// Python's `open()` asks every file for TCGETS (is it a terminal?): the
/// answer is ENOTTY, as from the kernel's filesystems, and the server logs
/// nothing for it (it logged a warning per call, 417 lines on a user's
/// terminal from one `rcfs run` of a Python image). poll(2) of a file is
/// answered the same quiet way.
#[test]
fn ioctl_on_a_file_is_enotty_and_logs_nothing() {
    use std::os::fd::AsRawFd;
    let d = dirs();
    let log = d.base.join("rcfs.log");
    let _g = guard(&d.mnt);
    let mut c = rcfs_mount(&lower_arg(&d.lowers), &d.upper, &d.work, &d.mnt);
    c.arg("--log").arg(&log);
    run(&mut c, COMMAND_TIMEOUT).expect_ok("rcfs mount --log");
    for name in ["top", "new"] {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(d.mnt.join(name))
            .unwrap();
        for _ in 0..3 {
            // SAFETY: termios is plain data the call fills in.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: TCGETS writes one termios into t.
            let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TCGETS, &mut t) };
            let e = std::io::Error::last_os_error();
            assert_eq!(r, -1, "TCGETS on {name} in the mount succeeded");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOTTY),
                "TCGETS on {name}: {e}"
            );
        }
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut p, 1, 1000) };
        assert_eq!(n, 1, "poll of {name}: {}", std::io::Error::last_os_error());
    }
    run(
        &mut cmd(RCFS, ["umount".into(), d.mnt.display().to_string()]),
        COMMAND_TIMEOUT,
    )
    .expect_ok("rcfs umount");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.trim().is_empty(),
        "the server logged for ioctl or poll:\n{text}"
    );
}
