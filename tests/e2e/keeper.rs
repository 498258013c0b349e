//! An ordinary user's containers join one user namespace that a keeper
//! process holds (`rcfs userns-keeper`, as podman's pause process), instead
//! of mapping a new one for each container. A keeper that is gone, a pid
//! file that names another process, and a runtime dir reached through a
//! symlink cost a new namespace and nothing else.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::containers::{code, Fixture};
use crate::mounts::{run, Run, RCFS};

const T: std::time::Duration = std::time::Duration::from_secs(180);
const NOBODY: u32 = 65534;

/// `rcfs run --rm --tls-verify=false IMAGE ARGS...` as uid 65534 with
/// `runtime` as its XDG_RUNTIME_DIR.
fn run_as_nobody(f: &Fixture, home: &Path, runtime: &Path, args: &[&str]) -> Run {
    let _ = Command::new("chmod").args(["666", "/dev/fuse"]).status();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", RCFS]);
    c.args(["run", "--rm", "--tls-verify=false", &f.image]);
    c.args(args);
    c.env("HOME", home)
        .env("XDG_RUNTIME_DIR", runtime)
        .env_remove("XDG_DATA_HOME");
    run(&mut c, T)
}

/// The user namespace the container's processes are in.
fn container_ns(f: &Fixture, home: &Path, runtime: &Path) -> String {
    let r = run_as_nobody(
        f,
        home,
        runtime,
        &["/bin/busybox", "readlink", "/proc/self/ns/user"],
    );
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("user:["), "{}", r.stdout);
    r.stdout.trim().to_owned()
}

fn keeper_pid(pid_file: &Path) -> i32 {
    std::fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Kills process `pid` and waits until it is gone (or a zombie).
fn kill(pid: i32) {
    // SAFETY: a signal to a process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "{pid} lives on");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Kills the keepers the test started (they would exit when idle).
struct Keepers(PathBuf);

impl Drop for Keepers {
    fn drop(&mut self) {
        if let Ok(t) = std::fs::read_to_string(&self.0) {
            if let Ok(pid) = t.trim().parse::<i32>() {
                // SAFETY: a signal to a process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn containers_of_a_user_join_one_kept_user_namespace() {
    let f = Fixture::new(91, "gzip");
    let home = f.dir.path().join("home");
    let runtime = f.dir.path().join("run");
    for d in [&home, &runtime] {
        std::fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(f.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let pid_file = runtime.join("rcfs/userns.pid");
    let _cleanup = Keepers(pid_file.clone());

    // The first run starts the keeper, the second joins its namespace.
    let first = container_ns(&f, &home, &runtime);
    let keeper = keeper_pid(&pid_file);
    assert_eq!(container_ns(&f, &home, &runtime), first);
    let dir = runtime.join("rcfs");
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "{}",
        dir.display()
    );
    let cmdline = std::fs::read(format!("/proc/{keeper}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(&args[..2], &[&b"rcfs"[..], b"userns-keeper"], "{cmdline:?}");
    let comm = std::fs::read_to_string(format!("/proc/{keeper}/comm")).unwrap();
    assert_eq!(comm, "rcfs-keeper\n", "the keeper's name in ps and pgrep");
    // It holds nothing of its caller's: stdio is /dev/null, and no fd but
    // its runtime dir's is open.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{keeper}/fd"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap().display().to_string())
        .collect();
    let mut fds = fds;
    fds.sort();
    assert_eq!(
        fds,
        [
            "/dev/null".into(),
            "/dev/null".into(),
            "/dev/null".into(),
            dir.display().to_string(),
        ],
        "the keeper's fds"
    );

    // A keeper that is gone: the next run starts another.
    kill(keeper);
    let r = run_as_nobody(&f, &home, &runtime, &["/bin/busybox", "true"]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let second = keeper_pid(&pid_file);
    assert_ne!(second, keeper);
    let ns = container_ns(&f, &home, &runtime);
    assert_ne!(ns, first, "the namespace of a killed keeper");

    // A pid file naming a process of another user (pid 1) or one whose
    // namespace is not this user's: not joined, a new keeper.
    for other in [1, std::process::id() as i32] {
        std::fs::write(&pid_file, format!("{other}\n")).unwrap();
        let got = container_ns(&f, &home, &runtime);
        // (Both are in the host's.)
        let host_ns = std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .display()
            .to_string();
        assert_ne!(got, host_ns, "joined the namespace of pid {other}");
        let new = keeper_pid(&pid_file);
        assert_ne!(new, other);
        kill(new);
    }
    kill(second);

    // A runtime dir reached through a symlink is not used: nothing is
    // written through it, and containers still run.
    std::fs::remove_dir_all(&dir).unwrap();
    let elsewhere = f.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    let r = run_as_nobody(&f, &home, &runtime, &["/bin/busybox", "true"]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let written: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().flatten().collect();
    assert!(
        written.is_empty(),
        "written through the symlink: {written:?}"
    );
}
