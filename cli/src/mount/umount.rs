//! Telling a mount's servers apart and taking a mount down: `rcfs umount`
//! unmounts and waits until the servers of the mount have exited (their
//! copied-up data flushed, their files closed).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{abs, which};

/// The mountinfo lines (split into fields) of mounts on `p` (canonical),
/// bottom first.
fn mounts_on(p: &Path) -> Vec<Vec<String>> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.get(4).map(|m| unescape_mountinfo(m)).as_deref() == Some(p.as_os_str()))
        .collect()
}

/// Whether `p` (canonical) is the mount point of a mount.
pub(super) fn is_mountpoint(p: &Path) -> bool {
    !mounts_on(p).is_empty()
}

/// The processes serving the FUSE mount on `p` (canonical): those holding a
/// /dev/fuse fd of its connection (the kernel names it in the fd's fdinfo,
/// Linux 6.x). Empty when that cannot be told.
fn servers_of(p: &Path) -> Vec<u32> {
    // The connection is the mount's anonymous device number (major 0).
    let Some(conn) = mounts_on(p).last().and_then(|f| {
        let (major, minor) = f.get(2)?.split_once(':')?;
        (major == "0").then(|| minor.to_owned())
    }) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for pe in procs.flatten() {
        let Some(pid) = pe.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(pe.path().join("fd")) else {
            continue;
        };
        let serves = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/fuse"))
                && std::fs::read_to_string(pe.path().join("fdinfo").join(fd.file_name())).is_ok_and(
                    |info| {
                        info.lines().any(|l| {
                            l.strip_prefix("fuse_connection:")
                                .is_some_and(|v| v.trim() == conn)
                        })
                    },
                )
        });
        if serves {
            pids.push(pid);
        }
    }
    pids
}

/// Whether process `pid` still runs: exists, and is no zombie whose
/// threads have all exited.
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let zombie = stat
        .rsplit_once(") ")
        .is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'));
    // A leader that has exited is a zombie while its other threads still
    // exit, and until the last of them has, the process's files (its
    // store's in-use lock among them) are open.
    !zombie || std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|t| t.take(2).count() > 1)
}

/// Waits for the servers of an unmounted mount to exit: they finish
/// flushing copied-up data first, and whoever unmounts may read the upper
/// dir next. Gives up (with a warning) after `limit`.
fn wait_servers(mp: &Path, pids: &[u32], limit: Duration) {
    let start = std::time::Instant::now();
    let mut told = false;
    while pids.iter().any(|&p| running(p)) {
        let waited = start.elapsed();
        if waited > limit {
            eprintln!(
                "rcfs: the server of {} (pid {pids:?}) is still running after {} s; not waiting longer",
                mp.display(),
                limit.as_secs()
            );
            return;
        }
        if !told && waited > Duration::from_secs(1) {
            eprintln!(
                "rcfs: waiting for the server of {} (pid {pids:?}) to exit (it writes out copied-up data and ends its fetches first)",
                mp.display()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn unescape_mountinfo(s: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

/// Unmounts `mountpoint` and waits for its server to finish and exit, so
/// that the upper dir is complete when this returns.
pub fn umount(mountpoint: &Path) -> Result<()> {
    let mp = abs(mountpoint)?;
    let servers = servers_of(&mp);
    detach(&mp)?;
    wait_servers(&mp, &servers, Duration::from_secs(120));
    Ok(())
}

/// Unmounts `mp` (root: umount2; others: fusermount3 -u).
fn detach(mp: &Path) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        match nix::mount::umount2(mp, nix::mount::MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => bail!(
                "{} is busy: a process still uses it (see `fuser -vm {}`); close it, or detach with `umount -l {}`",
                mp.display(),
                mp.display(),
                mp.display()
            ),
            Err(nix::errno::Errno::EINVAL) => bail!("{} is not a mount point", mp.display()),
            Err(e) => bail!("cannot unmount {}: {e}", mp.display()),
        }
    }
    let helper = which("fusermount3")
        .or_else(|| which("fusermount"))
        .context("unmounting as a normal user needs fusermount3 (Debian package fuse3)")?;
    let out = std::process::Command::new(helper)
        .arg("-u")
        .arg(mp)
        .output()
        .context("running fusermount3")?;
    if !out.status.success() {
        bail!(
            "cannot unmount {}: {}",
            mp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
