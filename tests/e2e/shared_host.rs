//! A shared machine: what rcfs makes of a user's store, containers,
//! sockets and cgroups must be that user's alone. Other local users are
//! played by uids that own nothing here (`setpriv`), root's store and a
//! rootless user's store are both checked, and a container's liveness is
//! its lock, not a guess from a pid.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::containers::{code, Fixture};
use crate::mounts::{run, Run, RCFS};

const T: Duration = Duration::from_secs(180);

/// A uid no one uses: another local user.
const OTHER: &str = "65533";

/// `sh -c SCRIPT` as the other user.
fn as_other(script: &str) -> Run {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={OTHER}"),
        &format!("--regid={OTHER}"),
        "--clear-groups",
        "sh",
        "-c",
        script,
    ]);
    run(&mut c, T)
}

/// Every entry of the store at `root`, with what another user could do to
/// it; the contents of containers' upper, work and rootfs dirs (the
/// container's files, closed off by the dirs around them) are left out.
fn audit(root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.mode() & 0o7777;
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if m.file_type().is_symlink() {
            continue;
        }
        if mode & 0o022 != 0 {
            bad.push(format!("{rel:?} is writable by others ({mode:o})"));
        }
        if m.is_dir() {
            let depth = p.strip_prefix(root).unwrap().components().count();
            // The store root and the dirs in it (containers/, run/, tmp/,
            // ...) and each container's dir: nobody else enters them.
            let closed = depth <= 1 || (depth == 2 && rel.starts_with("containers/"));
            if closed && mode & 0o077 != 0 {
                bad.push(format!("{rel:?} can be entered by others ({mode:o})"));
            }
            let inside_container = depth >= 3 && rel.starts_with("containers/");
            if !inside_container {
                for e in std::fs::read_dir(&p).unwrap() {
                    todo.push(e.unwrap().path());
                }
            }
        } else if !m.file_type().is_socket() && mode & 0o044 != 0 && !etc_file(&rel) {
            bad.push(format!("{rel:?} is readable by others ({mode:o})"));
        }
    }
    bad
}

/// A container's own `/etc/hosts`, `/etc/hostname` or `/etc/resolv.conf`,
/// kept in its dir:
/// 0644 as podman's, for the container's users to read (nobody else
/// enters the 0700 dir around it).
fn etc_file(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    matches!(
        parts[..],
        ["containers", _, "hosts" | "resolv.conf" | "hostname"]
    )
}

/// Pull, run (a container that keeps a setuid shell and a secret in its
/// record), stats of a mount, commit and gc in `store` through `rcfs`;
/// then the audit, and what another user can reach.
fn exercise_and_audit(f: &Fixture, store: &Path, rcfs: &dyn Fn(&[&str]) -> Run) {
    let img = f.image.as_str();
    rcfs(&["pull", "--tls-verify=false", img]).expect_ok("pull");
    open_the_way(f, store);
    let r = rcfs(&[
        "run",
        "--tls-verify=false",
        "--name",
        "t1",
        "-e",
        "PASSWORD=hunter2",
        img,
        "/bin/sh",
        "-c",
        "mkdir -p /tmp && cp /bin/busybox /tmp/sh && chmod 4755 /tmp/sh && echo made",
    ]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let mnt = store.parent().unwrap().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let owner = std::fs::metadata(store).unwrap().uid();
    std::os::unix::fs::chown(&mnt, Some(owner), Some(owner)).unwrap();
    rcfs(&["mount", img, mnt.to_str().unwrap()]).expect_ok("mount");
    let stats = rcfs(&["stats", mnt.to_str().unwrap()]);
    let _ = Command::new(RCFS)
        .args(["umount", mnt.to_str().unwrap()])
        .status();
    assert!(stats.success(), "stats: {}", stats.stderr);
    rcfs(&["commit", "t1", "local/t1:1"]).expect_ok("commit");
    rcfs(&["gc"]).expect_ok("gc");

    let bad = audit(store);
    assert!(
        bad.is_empty(),
        "the store is open to others:\n{}",
        bad.join("\n")
    );
    let s = store.display();
    for (what, script) in [
        ("list the store", format!("ls {s}")),
        (
            "read a record",
            format!("cat {s}/containers/t1/container.json"),
        ),
        (
            "run the setuid copy",
            format!("{s}/containers/t1/upper/tmp/sh -c id"),
        ),
        (
            "write into an upper",
            format!("touch {s}/containers/t1/upper/tmp/x"),
        ),
    ] {
        let r = as_other(&script);
        assert!(!r.success(), "another user could {what}: {}", r.stdout);
    }
}

#[test]
fn roots_store_is_roots_alone() {
    let f = Fixture::new(140, "zstd:chunked");
    let store = f.store();
    exercise_and_audit(&f, &store, &|a| f.rcfs(a));
}

#[test]
fn a_users_store_is_theirs_alone() {
    let f = Fixture::new(141, "zstd:chunked");
    let home = f.dir.path().join("home");
    let store = home.join(".local/share/rcfs");
    exercise_and_audit(&f, &store, &|a| f.rcfs_rootless(&home, a));
}

#[test]
fn an_old_stores_open_modes_are_closed() {
    // A store an older rcfs made (0755 dirs, a 0666 record, a 0777 run/):
    // opening it closes them.
    let f = Fixture::new(142, "gzip");
    let store = f.store();
    let img = f.image.as_str();
    let r = f.run(&["--name", "old", img, "/bin/sh", "-c", "exit 0"]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let rec = store.join("containers/old/container.json");
    for (p, mode) in [
        (store.clone(), 0o755),
        (store.join("containers"), 0o755),
        (store.join("containers/old"), 0o755),
        (rec.clone(), 0o666),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir_all(store.join("run")).unwrap();
    std::fs::set_permissions(store.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
    f.rcfs(&["ps", "-a"]).expect_ok("ps");
    let r = f.run(&["--rm", img, "/bin/sh", "-c", "exit 0"]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("containers")), 0o700);
    assert_eq!(mode(&store.join("containers/old")), 0o700);
    // The next write of the record is 0600; until then it is closed off by
    // the dirs around it.
    f.rcfs(&["start", "-a", "old"]).expect_ok("start -a");
    assert_eq!(mode(&rec), 0o600);
}

#[test]
fn a_store_someone_else_owns_is_refused() {
    let f = Fixture::new(143, "gzip");
    let store = f.store();
    std::fs::create_dir_all(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(65533), Some(65533)).unwrap();
    let r = f.rcfs(&["images"]);
    assert!(!r.success(), "root used a store uid 65533 owns");
    assert!(r.stderr.contains("owned by uid 65533"), "{}", r.stderr);
}

#[test]
fn stats_come_only_from_the_users_own_server() {
    // Another user's server, at the path of root's stats socket (as if
    // planted through an old world-writable run/): root's `rcfs stats`
    // refuses it, and prints nothing it said.
    let f = Fixture::new(144, "gzip");
    let store = f.store();
    rcfs_open_store(&f);
    let mnt = f.dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let sock = rcfs::stats::socket_path(&store, &mnt);
    let theirs = f.dir.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65533), Some(65533)).unwrap();
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let planted = theirs.join("s.sock");
    let mut server = Command::new("setpriv")
        .args([
            &format!("--reuid={OTHER}"),
            &format!("--regid={OTHER}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            "import socket,sys\n\
             s=socket.socket(socket.AF_UNIX)\n\
             s.bind(sys.argv[1]); s.listen(4)\n\
             while True:\n  c,_=s.accept(); c.sendall(b'cache_hits 999\\x1b[31m\\n'); c.close()\n",
            planted.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !planted.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the planted server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    std::fs::rename(&planted, &sock).unwrap();
    let r = f.rcfs(&["stats", mnt.to_str().unwrap()]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        !r.success(),
        "stats took another user's answer: {}",
        r.stdout
    );
    assert!(r.stderr.contains("uid 65533"), "{}", r.stderr);
    assert!(!r.stdout.contains("999"), "{}", r.stdout);
}

/// Lets everyone walk down to `store`'s parent (the test's dirs are 0700):
/// only the store's own modes keep another user out.
fn open_the_way(f: &Fixture, store: &Path) {
    let mut p = store.parent().unwrap();
    while p.starts_with(f.dir.path()) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p = p.parent().unwrap();
    }
}

/// `rcfs --root STORE run --tls-verify=false ARGS...` as root, to spawn
/// (for a container that runs while the test looks at it).
fn run_command(f: &Fixture, args: &[&str]) -> Command {
    let mut c = Command::new(RCFS);
    c.args([
        "--root",
        f.store().to_str().unwrap(),
        "run",
        "--tls-verify=false",
    ]);
    c.args(args);
    c
}

/// Makes the fixture's store (as root's rcfs would).
fn rcfs_open_store(f: &Fixture) {
    f.rcfs(&["images"]).expect_ok("images");
}

#[test]
fn cgroups_are_not_others_to_join() {
    // A v1 `rcfs` cgroup left 0777 by an older rcfs is closed again, and a
    // container's own cgroups are 0755: no other user can move into them
    // to escape the limits they are under.
    let f = Fixture::new(145, "gzip");
    let img = f.image.as_str();
    let v1 = Path::new("/sys/fs/cgroup/pids");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let base: PathBuf = if v2 {
        PathBuf::from("/sys/fs/cgroup/rcfs")
    } else {
        v1.join("rcfs")
    };
    if base.exists() {
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let leaf = base.join("rcfs-cg1");
    let script = format!("stat -c %a {} {}", base.display(), leaf.display());
    let mut child = run_command(
        &f,
        &[
            "--rm",
            "--name",
            "cg1",
            "--pids-limit",
            "64",
            img,
            "/bin/sh",
            "-c",
            "sleep 3",
        ],
    )
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !leaf.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no cgroup {}",
            leaf.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let modes = run(Command::new("sh").args(["-c", &script]), T).expect_ok("stat");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        modes.stdout.split_whitespace().collect::<Vec<_>>(),
        ["755", "755"]
    );
}

#[test]
fn a_container_runs_while_its_lock_is_held() {
    let f = Fixture::new(146, "gzip");
    let img = f.image.as_str();
    let r = f.run(&["--name", "done", img, "/bin/sh", "-c", "exit 0"]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    // Its record names a pid that is alive now and looks like an rcfs (a
    // pid used again): the container is still stopped.
    let mut decoy = Command::new("bash")
        .args(["-c", "exec -a rcfs-decoy sleep 60"])
        .spawn()
        .unwrap();
    let rec_path = f.store().join("containers/done/container.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    rec["pid"] = decoy.id().into();
    rec["exit_code"] = serde_json::Value::Null;
    std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let ps = f.rcfs(&["ps", "-a", "--json"]).expect_ok("ps");
    let listed: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(listed[0]["running"], false, "{}", ps.stdout);
    let r = f.rcfs(&["start", "-a", "done"]);
    let _ = decoy.kill();
    let _ = decoy.wait();
    assert_eq!(
        code(&r),
        Some(0),
        "start -a of a stopped container: {}",
        r.stderr
    );

    // While one runs: ps says so, and neither start, rm nor a second run of
    // the name can have it.
    let mut live = run_command(&f, &["--name", "live", img, "/bin/sh", "-c", "sleep 4"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ps = f.rcfs(&["ps", "--json"]).expect_ok("ps");
        if ps.stdout.contains("\"live\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "live never listed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for args in [
        &["start", "-a", "live"][..],
        &["rm", "live"],
        &["commit", "live", "x/y:1"],
    ] {
        let r = f.rcfs(args);
        assert!(!r.success(), "{args:?} of a running container worked");
        assert!(r.stderr.contains("is running"), "{args:?}: {}", r.stderr);
    }
    let r = f.run(&["--name", "live", img, "/bin/sh", "-c", "exit 0"]);
    assert!(r.stderr.contains("exists already"), "{}", r.stderr);
    assert!(live.wait().unwrap().success());
    f.rcfs(&["rm", "live", "done"]).expect_ok("rm once stopped");
}

#[test]
fn two_runs_of_one_name_get_it_once() {
    let f = Fixture::new(147, "gzip");
    let img = f.image.as_str();
    f.rcfs(&["pull", "--tls-verify=false", img])
        .expect_ok("pull");
    let spawn = || {
        run_command(&f, &["--name", "same", img, "/bin/sh", "-c", "sleep 1"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for _ in 0..3 {
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let ok = [a.status.success(), b.status.success()];
        assert_eq!(
            ok.iter().filter(|&&s| s).count(),
            1,
            "{}\n{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        f.rcfs(&["rm", "same"]).expect_ok("rm");
    }
}
