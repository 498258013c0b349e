//! A process that mounts many unions (the runtime will start a container
//! after another) must get everything back when each mount ends: the
//! union's background threads end and the union itself is freed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcfs_fs::fuse::{MountOptions, UnionFs};
use rcfs_fs::layer::{DirLayer, Layer as _};
use rcfs_fs::union::{Config, Union, UpperConfig};
use rcfs_fs::MountConfig;

use crate::harness::temp_dir;
use crate::mounts;

/// Threads of this process whose names start with `rcfs-` (the union's
/// background threads; the other e2e cases run rcfs as a separate process).
fn rcfs_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("rcfs-"))
        })
        .count()
}

/// Mounts a union of `lower` with `upper`/`work` at `mnt` in this process,
/// uses it, unmounts it; returns a weak reference to the union.
fn mount_use_unmount(
    lower: &Path,
    upper: &Path,
    work: &Path,
    mnt: &Path,
    round: usize,
) -> std::sync::Weak<Union> {
    let layer = Arc::new(DirLayer::new(lower).unwrap());
    assert!(!layer.id().is_empty());
    let union = Arc::new(
        Union::new(Config {
            lowers: vec![layer],
            upper: Some(UpperConfig {
                upper: upper.to_path_buf(),
                work: work.to_path_buf(),
            }),
            metacopy: true,
            fsync: true,
        })
        .unwrap(),
    );
    let weak = Arc::downgrade(&union);
    let fs = UnionFs::new(union, MountOptions::default());
    let session = rcfs_fs::mount(fs, mnt, &MountConfig::default()).unwrap();
    let server = std::thread::spawn(move || session.run());
    // List (prefetching starts), read ahead (a lower file opened), copy up,
    // write, and leave a file open across nothing.
    // (A DirEntry keeps its directory open: count, do not keep them.)
    let names = std::fs::read_dir(mnt).unwrap().flatten().count();
    assert!(names >= 3);
    std::fs::read_dir(mnt.join("d")).unwrap().for_each(drop);
    assert_eq!(std::fs::read(mnt.join("d/f0")).unwrap(), b"lower");
    std::fs::write(mnt.join(format!("new{round}")), b"new").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("d/f1"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"+").unwrap();
    drop(f);
    // Children that other tests fork meanwhile get copies of this
    // process's fds, ours among them, and keep the mount busy until they
    // exit: wait for them. (Not with fuser's unmounter: the first EBUSY
    // uses it up, and a retry then "succeeds" without unmounting, which
    // left this test waiting for a server that never ended.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match nix::mount::umount2(mnt, nix::mount::MntFlags::empty()) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("unmounting {}: {e}", mnt.display()),
        }
    }
    // (ECONNABORTED: a request was being handed over as the unmount
    // aborted the connection; the session ended all the same.)
    match server.join().unwrap() {
        Err(e) if e.raw_os_error() != Some(libc::ECONNABORTED) => {
            panic!("the server of {} failed: {e}", mnt.display())
        }
        _ => {}
    }
    weak
}

#[test]
fn a_process_that_mounts_many_unions_gets_everything_back() {
    mounts::require_privileges();
    let tmp = temp_dir();
    let base = tmp.path();
    let (lower, upper, work, mnt) = (
        base.join("l"),
        base.join("u"),
        base.join("w"),
        base.join("m"),
    );
    for d in [&lower, &upper, &work, &mnt, &lower.join("d")] {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 0..40 {
        std::fs::write(lower.join("d").join(format!("f{i}")), b"lower").unwrap();
        std::fs::create_dir_all(lower.join(format!("sub{i}/a/b"))).unwrap();
    }
    for round in 0..25 {
        let union = mount_use_unmount(&lower, &upper, &work, &mnt, round);
        // The server's threads have ended: nothing holds the union, so it
        // and all its nodes are freed.
        assert!(
            union.upgrade().is_none(),
            "round {round}: the union is still alive after its mount ended"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while rcfs_threads() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            rcfs_threads(),
            0,
            "round {round}: background threads outlived their mount"
        );
    }
    assert!(!mounts::is_mountpoint(&mnt));
}

/// A server started in the foreground at `mnt` (the old one of
/// [`an_exiting_server_leaves_the_next_mount_at_its_path_alone`]), or in
/// the background (`foreground` false: returns once mounted).
fn server(bin: &str, lower: &Path, upper: &Path, work: &Path, mnt: &Path) -> Command {
    let mut c = Command::new(bin);
    if bin == mounts::RCFS {
        c.arg("mount")
            .arg("--lower")
            .arg(lower)
            .arg("--upper")
            .arg(upper)
            .arg("--work")
            .arg(work);
    } else {
        // As podman calls fuse-overlayfs.
        c.arg("-o").arg(format!(
            "lowerdir={},upperdir={},workdir={},nodev",
            lower.display(),
            upper.display(),
            work.display()
        ));
    }
    c.arg(mnt);
    c
}

/// Podman unmounts a container's root itself (`umount`, or `umount -l`
/// while something still holds a file) and may mount the next one at the
/// same path at once. The old server, ending after that, must leave the new
/// mount alone: it unmounted whatever was at its path as it exited, and a
/// `podman commit` then saw an empty upper dir under whiteouts.
fn next_mount_survives(bin: &str) {
    mounts::require_privileges();
    let tmp = temp_dir();
    let base = tmp.path();
    let (lower, mnt) = (base.join("l"), base.join("m"));
    for d in [&lower, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(lower.join("f"), b"lower").unwrap();
    for round in 0..10 {
        let lazy = round % 2 == 1;
        let how = if lazy { "umount -l" } else { "umount" };
        let dirs = |who: &str| {
            let (u, w) = (
                base.join(format!("{who}{round}u")),
                base.join(format!("{who}{round}w")),
            );
            std::fs::create_dir_all(&u).unwrap();
            std::fs::create_dir_all(&w).unwrap();
            (u, w)
        };
        let (ou, ow) = dirs("old");
        let log = base.join(format!("old{round}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut old = server(bin, &lower, &ou, &ow, &mnt)
            .arg("-f")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + mounts::COMMAND_TIMEOUT;
        while !mounts::is_mountpoint(&mnt) {
            assert!(
                old.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "{bin} -f did not mount: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let _guard = mounts::Mount::adopt(
            &mnt,
            None,
            mounts::Kind::Fuse {
                unmount: vec!["umount".into()],
            },
        );
        assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"lower");
        // A reader keeps the old mount's superblock (and server) alive past
        // a lazy unmount, until the new mount is in place.
        let held = lazy.then(|| std::fs::File::open(mnt.join("f")).unwrap());
        let mut umount = Command::new("umount");
        if lazy {
            umount.arg("-l");
        }
        mounts::run(umount.arg(&mnt), mounts::COMMAND_TIMEOUT).expect_ok(how);
        let (nu, nw) = dirs("new");
        mounts::run(
            &mut server(bin, &lower, &nu, &nw, &mnt),
            mounts::COMMAND_TIMEOUT,
        )
        .expect_ok("mounting the next one");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(20);
        while old.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round} ({how}): the old {bin} server still runs 20 s after its unmount"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Anything the old server did on its way out is done.
        assert!(
            mounts::is_mountpoint(&mnt),
            "round {round} ({how}): the old {bin} server's exit unmounted the next mount at its path; its log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert_eq!(
            std::fs::read(mnt.join("f")).unwrap(),
            b"lower",
            "round {round} ({how}): the next mount does not serve"
        );
        std::fs::write(mnt.join("new"), b"n").unwrap();
        assert_eq!(std::fs::read(nu.join("new")).unwrap(), b"n");
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(
            !log.contains("umount") && !log.contains("Unmount"),
            "round {round} ({how}): the old server tried to unmount:\n{log}"
        );
        mounts::run(Command::new("umount").arg(&mnt), mounts::COMMAND_TIMEOUT)
            .expect_ok("unmounting the next one");
        assert!(
            mounts::wait_daemons_gone(&mnt, Duration::from_secs(10)),
            "round {round}: the next server outlived its unmount"
        );
    }
}

#[test]
fn an_exiting_rcfs_overlay_leaves_the_next_mount_at_its_path_alone() {
    next_mount_survives(mounts::RCFS_OVERLAY);
}

#[test]
fn an_exiting_rcfs_mount_leaves_the_next_mount_at_its_path_alone() {
    next_mount_survives(mounts::RCFS);
}

/// A user's `rcfs mount` whose image cannot be opened fails with the
/// reason and leaves nothing mounted: fusermount3 mounts while the server
/// opens the image, and the server takes that mount down when it fails.
/// Once the image can be opened, the same mount works. What the server
/// opens after the mount is made (the store, a log file) must not be
/// inside the mountpoint: refused before anything is mounted.
#[test]
fn a_users_mount_that_fails_leaves_nothing_mounted() {
    use std::os::unix::fs::PermissionsExt;
    let f = crate::containers::Fixture::new(171, "gzip");
    let home = f.dir.path().join("home");
    let img = f.image.as_str();
    f.rcfs_rootless(&home, &["pull", "--tls-verify=false", img])
        .expect_ok("pull as a user");
    let mnt = f.dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(65534), Some(65534)).unwrap();
    let records = home.join(".local/share/rcfs/layers/sha256");
    let set_modes = |mode: u32| {
        for e in std::fs::read_dir(&records).unwrap().flatten() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    // Its layers' records unreadable to their owner: the image is found
    // and cannot be opened.
    set_modes(0o000);
    let m = mnt.to_str().unwrap();
    let r = f.rcfs_rootless(&home, &["mount", img, m]);
    assert!(!r.success(), "mounted an image whose layers cannot be read");
    assert!(
        r.stderr.contains("cannot open the layers of"),
        "not the reason: {}",
        r.stderr
    );
    assert!(
        !mounts::is_mountpoint(&mnt),
        "a failed mount left a mount at {m}"
    );
    assert!(
        mounts::wait_daemons_gone(&mnt, Duration::from_secs(10)),
        "the failed mount's server is still running"
    );
    set_modes(0o600);
    f.rcfs_rootless(&home, &["mount", img, m])
        .expect_ok("mount as a user");
    let r = mounts::run(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
            .arg(&mnt),
        mounts::COMMAND_TIMEOUT,
    );
    let ls = r.expect_ok("ls of the mount");
    assert!(ls.stdout.contains("bin"), "{}", ls.stdout);
    f.rcfs_rootless(&home, &["umount", m]).expect_ok("umount");
    assert!(!mounts::is_mountpoint(&mnt));
    // A mount over the user's own store (their home) would hide it from
    // the server, which opens it after the mount is made: refused at once.
    let r = f.rcfs_rootless(&home, &["mount", img, home.to_str().unwrap()]);
    assert!(!r.success(), "mounted an image over its own store");
    assert!(r.stderr.contains("inside the mountpoint"), "{}", r.stderr);
    assert!(!mounts::is_mountpoint(&home));
    // So would a log file inside the mountpoint (the server opens it
    // before it serves).
    let log = mnt.join("server.log");
    let r = f.rcfs_rootless(&home, &["mount", "--log", log.to_str().unwrap(), img, m]);
    assert!(!r.success(), "mounted with its log inside the mount");
    assert!(r.stderr.contains("inside the mountpoint"), "{}", r.stderr);
    assert!(!log.exists(), "the refused log file was created");
    assert!(!mounts::is_mountpoint(&mnt));
}
