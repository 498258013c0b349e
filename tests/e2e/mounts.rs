//! Mounting and unmounting the filesystems under test, and running commands.
//!
//! A [`Mount`] is one mounted union (kernel overlayfs, rcfs, or
//! fuse-overlayfs standing in for rcfs); dropping it unmounts it — the proper
//! way first, `umount -l` as the last resort — and kills a daemon that
//! outlived its mount, so a failing test leaves nothing behind. Commands run
//! with a timeout and with stdout/stderr sent to files, never pipes: a
//! daemon that inherits a pipe would keep a reader waiting for EOF forever.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::sys;

/// The userspace union filesystem whose behaviour is compared with the
/// kernel's. `RCFS_E2E_IMPL=fuse-overlayfs` swaps in fuse-overlayfs, which
/// validates the harness itself (see main.rs for its known differences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Rcfs,
    FuseOverlayfs,
}

impl Impl {
    pub fn from_env() -> Impl {
        match std::env::var("RCFS_E2E_IMPL").as_deref() {
            Err(_) | Ok("") | Ok("rcfs") => Impl::Rcfs,
            Ok("fuse-overlayfs") => Impl::FuseOverlayfs,
            Ok(other) => panic!("RCFS_E2E_IMPL={other}: expected rcfs or fuse-overlayfs"),
        }
    }

    pub fn is_rcfs(self) -> bool {
        self == Impl::Rcfs
    }
}

pub const RCFS: &str = env!("CARGO_BIN_EXE_rcfs");
pub const RCFS_OVERLAY: &str = env!("CARGO_BIN_EXE_rcfs-overlay");
pub const FUSE_OVERLAYFS: &str = "/usr/bin/fuse-overlayfs";

/// How long a mount or unmount command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Fails the test unless it can mount: root, /dev/fuse, kernel overlayfs.
/// Never skips: a suite that silently tests nothing is worse than a red one.
pub fn require_privileges() {
    assert_eq!(
        sys::geteuid(),
        0,
        "the e2e suite mounts filesystems and must run as root (CI runs as root); run it with sudo"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the e2e suite needs FUSE (modprobe fuse)"
    );
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        let _ = Command::new("modprobe").arg("overlay").status();
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        assert!(
            filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay")),
            "kernel overlayfs is not available (modprobe overlay failed); the e2e suite compares against it"
        );
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing the output, unless the command succeeded.
    pub fn expect_ok(self, what: &str) -> Run {
        assert!(
            self.success(),
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion within `timeout`, stdin closed, output captured
/// through files (see the module doc). Panics if it does not finish in time.
pub fn run(cmd: &mut Command, timeout: Duration) -> Run {
    let out = tempfile::tempfile().expect("temp file for stdout");
    let err = tempfile::tempfile().expect("temp file for stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        status,
        stdout: read_back(out),
        stderr: read_back(err),
    }
}

fn read_back(mut f: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut s = String::new();
    f.rewind().unwrap();
    let _ = f.read_to_string(&mut s);
    s
}

/// `Command` for `program args...`.
pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut c = Command::new(program);
    c.args(args.into_iter().map(Into::into));
    c
}

/// Unescapes a mountinfo path field (`\040` for space, ...).
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(OsString::from_vec(out))
}

/// The mount of `path` from /proc/self/mountinfo, if `path` is a mount point:
/// (fs type, source, super options).
pub fn mount_info(path: &Path) -> Option<(String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    // The last entry for a path is the one on top.
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if unescape(fields.get(4)?) != path {
            return None;
        }
        Some((
            fields.get(sep + 1)?.to_string(),
            fields.get(sep + 2)?.to_string(),
            fields.get(sep + 3).unwrap_or(&"").to_string(),
        ))
    })
}

pub fn is_mountpoint(path: &Path) -> bool {
    mount_info(path).is_some()
}

/// Pids of processes (other than us) with an argument equal to `mnt`: the
/// daemon serving that mount point. Mount points are unique temp paths, so
/// these are processes this test started.
/// SIGKILLs `pids` (servers this test started), as a crash or the OOM
/// killer would.
pub fn kill_hard(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

pub fn daemons_of(mnt: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == mnt.as_os_str().as_encoded_bytes())
        {
            // A zombie has an empty cmdline, so this one is alive.
            pids.push(pid);
        }
    }
    pids
}

/// Waits up to `timeout` for the daemons of `mnt` to exit; true if they did.
pub fn wait_daemons_gone(mnt: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if daemons_of(mnt).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a mount is taken down properly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Kernel overlayfs (or any kernel mount): `umount`.
    Kernel,
    /// A FUSE daemon: the given unmount command, MNT appended.
    Fuse { unmount: Vec<String> },
}

/// One mounted union filesystem; unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    /// The mount point: the merged view.
    pub root: PathBuf,
    pub upper: Option<PathBuf>,
    pub kind: Kind,
}

/// `lowerdir=A:B[,upperdir=U,workdir=W]`.
pub fn overlay_options(lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> String {
    let lower = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut opts = format!("lowerdir={lower}");
    if let Some((u, w)) = upper {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    opts
}

impl Mount {
    /// Mounts kernel overlayfs at `root`.
    pub fn kernel(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, root: &Path) -> Mount {
        let opts = overlay_options(lowers, upper);
        // Adopted first, so a mount made by a command that then times out
        // is still taken down.
        let m = Mount::adopt(root, upper, Kind::Kernel);
        run(
            &mut cmd(
                "mount",
                [
                    "-t".into(),
                    "overlay".into(),
                    "overlay".into(),
                    "-o".into(),
                    opts,
                    path_arg(root),
                ],
            ),
            COMMAND_TIMEOUT,
        )
        .expect_ok("mounting kernel overlayfs");
        m
    }

    /// Mounts the subject (rcfs or its stand-in) at `root`; returns once the
    /// mount is ready, as `rcfs mount` promises.
    pub fn subject(
        imp: Impl,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        root: &Path,
    ) -> Mount {
        Mount::subject_with(imp, lowers, upper, root, false)
    }

    /// [`Mount::subject`], with `allow_other` if asked (other users may use
    /// the mount; the kernel checks their permissions).
    pub fn subject_with(
        imp: Impl,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        root: &Path,
        allow_other: bool,
    ) -> Mount {
        Mount::subject_args(imp, lowers, upper, root, allow_other, &[])
    }

    /// [`Mount::subject_with`], passing `extra` flags to `rcfs mount` (none
    /// to a stand-in).
    pub fn subject_args(
        imp: Impl,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        root: &Path,
        allow_other: bool,
        extra: &[&str],
    ) -> Mount {
        let (mut c, kind) = match imp {
            Impl::Rcfs => {
                let lower = lowers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":");
                let mut args = vec!["mount".to_string(), "--lower".into(), lower];
                if let Some((u, w)) = upper {
                    args.extend([
                        "--upper".into(),
                        u.display().to_string(),
                        "--work".into(),
                        w.display().to_string(),
                    ]);
                }
                if allow_other {
                    args.push("--allow-other".into());
                }
                args.extend(extra.iter().map(|a| a.to_string()));
                args.push(root.display().to_string());
                (
                    cmd(RCFS, args),
                    Kind::Fuse {
                        unmount: vec![RCFS.into(), "umount".into()],
                    },
                )
            }
            Impl::FuseOverlayfs => (
                cmd(
                    FUSE_OVERLAYFS,
                    [
                        "-o".into(),
                        overlay_options(lowers, upper)
                            + if allow_other { ",allow_other" } else { "" },
                        path_arg(root),
                    ],
                ),
                Kind::Fuse {
                    unmount: vec!["fusermount3".into(), "-u".into()],
                },
            ),
        };
        let m = Mount::adopt(root, upper, kind);
        let r = run(&mut c, COMMAND_TIMEOUT).expect_ok(&format!("mounting {imp:?}"));
        assert!(
            is_mountpoint(root),
            "{imp:?} mount exited 0 but {} is not mounted\nstderr: {}",
            root.display(),
            r.stderr
        );
        m
    }

    /// Takes ownership of an existing mount at `root` (unmounted on drop).
    pub fn adopt(root: &Path, upper: Option<(&Path, &Path)>, kind: Kind) -> Mount {
        Mount {
            root: root.to_path_buf(),
            upper: upper.map(|(u, _)| u.to_path_buf()),
            kind,
        }
    }

    /// Unmounts the proper way; returns the command's result. The drop
    /// handler cleans up whatever this leaves behind.
    pub fn unmount(&self) -> Run {
        let mut c = match &self.kind {
            Kind::Kernel => cmd("umount", [path_arg(&self.root)]),
            Kind::Fuse { unmount } => {
                let mut c = cmd(&unmount[0], &unmount[1..]);
                c.arg(&self.root);
                c
            }
        };
        run(&mut c, COMMAND_TIMEOUT)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mountpoint(&self.root) {
            let r = self.unmount();
            if is_mountpoint(&self.root) {
                eprintln!(
                    "unmounting {} failed ({}): {}; lazy unmount",
                    self.root.display(),
                    r.status,
                    r.stderr
                );
                let _ = Command::new("umount").arg("-l").arg(&self.root).status();
            }
        }
        if let Kind::Fuse { .. } = self.kind {
            if !wait_daemons_gone(&self.root, Duration::from_secs(5)) {
                for pid in daemons_of(&self.root) {
                    eprintln!(
                        "daemon {pid} of {} outlived its mount; killing it",
                        self.root.display()
                    );
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

pub fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Kills the daemon of a FUSE mount if a test is still running after a
/// deadline: a hung daemon then fails the test (ENOTCONN) instead of
/// hanging the whole suite. Disarmed on drop.
pub struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long one comparison case may take before its daemon is killed.
pub const CASE_DEADLINE: Duration = Duration::from_secs(120);

impl Watchdog {
    pub fn new(mnt: &Path, deadline: Duration) -> Watchdog {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, mnt) = (done.clone(), mnt.to_path_buf());
        std::thread::spawn(move || {
            let end = Instant::now() + deadline;
            while Instant::now() < end {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            crate::stress::dump_stacks(&mnt);
            for pid in daemons_of(&mnt) {
                eprintln!(
                    "test still running after {deadline:?}: killing daemon {pid} of {} (hung?)",
                    mnt.display()
                );
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
