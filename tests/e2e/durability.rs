//! What rcfs makes durable, seen from below: its upper dir lives in
//! another rcfs mount whose debug log records every request that reaches
//! it. An `fsync` of a directory in the union must flush the upper dir
//! (FSYNCDIR below), and an `fsync` of a file that a copy-up renamed into
//! place must also flush the directory it was renamed into, or the file
//! could be gone after a crash although its data was synced.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::temp_dir;
use crate::mounts::{self, cmd, run, Kind, Mount, COMMAND_TIMEOUT, RCFS};

/// FSYNCDIR requests in a debug log.
fn fsyncdirs(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("fsyncdir(") && !l.contains("Err("))
        .count()
}

/// Waits (a little) for the log to show more FSYNCDIRs than `before`.
fn more_fsyncdirs(log: &Path, before: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if fsyncdirs(log) > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn fsync(p: &Path) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY * i32::from(p.is_dir()))
        .open(p)
        .unwrap();
    f.sync_all().unwrap();
}

#[test]
fn fsync_flushes_the_upper_dirs_it_depends_on() {
    mounts::require_privileges();
    let tmp = temp_dir();
    let b = tmp.path();
    let dirs = ["a-lower", "a-upper", "a-work", "a", "lower/d", "mnt"];
    for d in dirs {
        std::fs::create_dir_all(b.join(d)).unwrap();
    }
    std::fs::write(b.join("lower/d/f"), b"lower data").unwrap();
    let log = b.join("a.log");
    // A: the filesystem the union's upper dir lives on, logging requests.
    run(
        cmd(
            RCFS,
            [
                "mount", "--lower", "a-lower", "--upper", "a-upper", "--work", "a-work", "--debug",
                "--log", "a.log", "a",
            ],
        )
        .current_dir(b),
        COMMAND_TIMEOUT,
    )
    .expect_ok("mounting the filesystem below");
    let unmount = || Kind::Fuse {
        unmount: vec![RCFS.into(), "umount".into()],
    };
    let _a = Mount::adopt(&b.join("a"), None, unmount());
    for d in ["a/upper", "a/work"] {
        std::fs::create_dir(b.join(d)).unwrap();
    }
    // The union under test, its upper and work dirs in A.
    run(
        cmd(
            RCFS,
            [
                "mount", "--lower", "lower", "--upper", "a/upper", "--work", "a/work", "mnt",
            ],
        )
        .current_dir(b),
        COMMAND_TIMEOUT,
    )
    .expect_ok("mounting the union");
    let m = Mount::adopt(&b.join("mnt"), None, unmount());
    let mnt = b.join("mnt");

    // fsync of a directory of the union flushes its upper dir.
    std::fs::create_dir(mnt.join("new")).unwrap();
    let before = fsyncdirs(&log);
    fsync(&mnt.join("new"));
    assert!(
        more_fsyncdirs(&log, before),
        "fsync of a union dir did not flush its upper dir"
    );
    // fsync of a file copied up flushes the dir the copy was renamed into.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("d/f"))
        .unwrap();
    std::io::Write::write_all(&mut f, b" and more").unwrap();
    let before = fsyncdirs(&log);
    f.sync_all().unwrap();
    assert!(
        more_fsyncdirs(&log, before),
        "fsync of a copied-up file did not flush the dir it was renamed into"
    );
    drop(f);
    m.unmount().expect_ok("rcfs umount");
    std::mem::forget(m);
    assert_eq!(
        std::fs::read(b.join("a/upper/d/f")).unwrap(),
        b"lower data and more"
    );
}
