//! A process that mounts many unions (the runtime will start a container
//! after another) must get everything back when each mount ends: the
//! union's background threads end and the union itself is freed.

use std::path::Path;
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
