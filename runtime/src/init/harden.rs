//! Keeping a container's `/proc` and `/sys` from the host's kernel settings
//! and hardware.
//!
//! Real root's container is root of an identity-mapped user namespace, so
//! the host's root-owned files that its `/proc` and `/sys` reach would be
//! its to write: sysctls (`kernel.core_pattern` runs a program as the
//! host's root), `/proc/sysrq-trigger`, the cgroup hierarchies and FUSE
//! connections under `/sys`. As runc does, the parts of `/proc` that set
//! the kernel are read-only, those that show its internals are masked, and
//! every mount under `/sys` is read-only, not only sysfs itself. An
//! ordinary user's container gets the same. Everything is reached from fds
//! of the container's `/proc` and `/sys`, never by a path through the
//! image.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::{err, fd_path, openat2, readonly};

/// What of `/proc` sets the kernel: read-only.
const PROC_READONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];
/// What of `/proc` and `/sys` shows the kernel's internals or the host's
/// hardware: hidden (an empty read-only tmpfs over a dir, /dev/null over a
/// file).
const PROC_MASKED: [&str; 9] = [
    "acpi",
    "asound",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];
const SYS_MASKED: [&str; 2] = ["firmware", "devices/virtual/powercap"];

/// `rel` under `dir`, never through a symlink or above `dir` (mounts on
/// the way are crossed); None if it does not exist.
fn beneath(dir: BorrowedFd<'_>, rel: &str) -> io::Result<Option<OwnedFd>> {
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    match openat2(dir, rel, libc::O_PATH | libc::O_NOFOLLOW, 0, resolve) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(err(rel, e)),
    }
}

/// The container's `/proc` (an fd of its root): [`PROC_READONLY`] bound
/// onto itself read-only, [`PROC_MASKED`] hidden.
pub(super) fn proc(procfd: BorrowedFd<'_>) -> io::Result<()> {
    for name in PROC_READONLY {
        let Some(fd) = beneath(procfd, name)? else {
            continue;
        };
        let p = fd_path(&fd);
        mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err(&format!("binding /proc/{name}"), e))?;
        // The bind mount, now on top.
        let top = beneath(procfd, name)?
            .ok_or_else(|| io::Error::other(format!("/proc/{name} went away")))?;
        readonly(Path::new(&fd_path(&top)))
            .map_err(|e| err(&format!("making /proc/{name} read-only"), e))?;
    }
    for name in PROC_MASKED {
        mask(procfd, name, "/proc")?;
    }
    Ok(())
}

/// The container's `/sys` (an fd of its root, the host's `/sys` bound
/// recursively and made read-only): every mount under it read-only too,
/// [`SYS_MASKED`] hidden.
pub(super) fn sys(sysfd: BorrowedFd<'_>) -> io::Result<()> {
    let top = std::fs::read_link(fd_path(sysfd))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        let Some(point) = line.split(' ').nth(4).map(unescape) else {
            continue;
        };
        let Ok(rel) = Path::new(&point).strip_prefix(&top) else {
            continue;
        };
        let Some(rel) = rel.to_str().filter(|r| !r.is_empty()) else {
            continue;
        };
        // Gone since (a mount under another one made read-only is still
        // there): nothing to do.
        let Some(fd) = beneath(sysfd, rel)? else {
            continue;
        };
        readonly(Path::new(&fd_path(&fd)))
            .map_err(|e| err(&format!("making /sys/{rel} read-only"), e))?;
    }
    for name in SYS_MASKED {
        mask(sysfd, name, "/sys")?;
    }
    Ok(())
}

/// Hides `name` under `dir` (shown to the user as `what`), if it exists.
fn mask(dir: BorrowedFd<'_>, name: &str, what: &str) -> io::Result<()> {
    let Some(fd) = beneath(dir, name)? else {
        return Ok(());
    };
    let p = fd_path(&fd);
    let is_dir = nix::sys::stat::fstat(fd.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(|e| err(&format!("{what}/{name}"), e))?;
    let r = if is_dir {
        mount(
            Some("tmpfs"),
            p.as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0"),
        )
    } else {
        mount(
            Some("/dev/null"),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.map_err(|e| err(&format!("masking {what}/{name}"), e))
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b/c\\134d"), "/a b/c\\d");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\04"), "/odd\\04");
    }
}
