//! A user namespace kept for an ordinary user's containers.
//!
//! Mapping a new user namespace's ids takes a process outside it, and with
//! `/etc/subuid` ranges the setuid helpers newuidmap and newgidmap: two
//! execs, a few ms of every container's start. As podman's rootless pause
//! process does, one small process, the keeper (`rcfs userns-keeper`),
//! holds a user namespace so mapped, and `rcfs run` joins it (`setns`) and
//! makes only a mount namespace of its own. Containers stay apart as they
//! did: each has its own mount, pid, uts and ipc namespaces.
//!
//! The keeper's pid is in `userns.pid` of the user's runtime dir
//! (`$XDG_RUNTIME_DIR/rcfs`, else `/tmp/rcfs-UID`; a dir that is not the
//! user's own, mode 0700, is not used). A run joins only a namespace the
//! user owns whose maps are the ones it would write now, so a stale or
//! forged pid file, or a changed `/etc/subuid`, costs a new keeper and
//! nothing else. Each join touches the pid file; the keeper exits once no
//! run has joined it for [`IDLE`], or when its pid file is gone or names
//! another process. Containers running then keep their namespace.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use nix::fcntl::{openat, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::ns::{write_maps, IdMap};

/// The hidden `rcfs` subcommand that runs the keeper
/// ([`keep`]; its one argument: the runtime dir).
pub const KEEPER_COMMAND: &str = "userns-keeper";

/// The keeper exits after this long with no run joining it.
pub const IDLE: Duration = Duration::from_secs(600);

/// How often the keeper looks at its pid file.
const CHECK: Duration = Duration::from_secs(30);

const PID_FILE: &str = "userns.pid";

/// The user's runtime dir for the keeper's pid file, made if missing: a
/// directory of the caller's own, mode 0700, never reached through a
/// symlink; None if there is no such place.
fn runtime_dir() -> Option<(PathBuf, OwnedFd)> {
    let uid = nix::unistd::geteuid().as_raw();
    let mut places = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if x.is_absolute() && own_private_dir(&x, uid, false).is_some() {
            places.push(x.join("rcfs"));
        }
    }
    places.push(PathBuf::from(format!("/tmp/rcfs-{uid}")));
    places
        .into_iter()
        .find_map(|p| own_private_dir(&p, uid, true).map(|fd| (p, fd)))
}

/// An fd of directory `p` if it is `uid`'s, not a symlink, and (with
/// `private`, made 0700 if missing) closed to everyone else.
fn own_private_dir(p: &Path, uid: u32, private: bool) -> Option<OwnedFd> {
    if private {
        match nix::unistd::mkdir(p, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(_) => return None,
        }
    }
    let fd = nix::fcntl::open(
        p,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    let open_to_others = st.st_mode & 0o077 != 0;
    (st.st_uid == uid && !(private && open_to_others)).then_some(fd)
}

/// Reads the pid file in `dir`.
fn read_pid(dir: &OwnedFd) -> Option<i32> {
    let fd = openat(
        dir,
        PID_FILE,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Moves this process (single-threaded) into the kept user namespace for
/// `map`, starting a keeper if there is none to join. An error leaves
/// this process where it was.
pub(crate) fn join(map: IdMap) -> io::Result<()> {
    if expected(map).is_none() {
        return Err(io::Error::other(
            "real root keeps the host's user namespace",
        ));
    }
    let (dir, dirfd) = runtime_dir().ok_or_else(|| io::Error::other("no private runtime dir"))?;
    let ns = match read_pid(&dirfd).and_then(|pid| kept_namespace(pid, map)) {
        Some(ns) => ns,
        None => start(&dir, &dirfd, map)?,
    };
    // A join counts as use (see [`keep`]).
    let _ = nix::sys::stat::utimensat(
        &dirfd,
        PID_FILE,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(|e| io::Error::other(format!("cannot join the kept user namespace: {e}")))
}

/// The user namespace of process `pid`, if it is a live keeper's, this
/// user owns it, and its maps are exactly the ones `map` writes.
fn kept_namespace(pid: i32, map: IdMap) -> Option<OwnedFd> {
    let path = format!("/proc/{pid}/ns/user");
    let ns = OwnedFd::from(File::open(&path).ok()?);
    // A keeper, and alive: a dead one's (a zombie's) cmdline is empty.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if !cmdline.starts_with(format!("rcfs\0{KEEPER_COMMAND}\0").as_bytes()) {
        return None;
    }
    if owner_uid(&ns)? != nix::unistd::geteuid().as_raw() {
        return None;
    }
    let maps = (
        std::fs::read_to_string(format!("/proc/{pid}/uid_map")).ok()?,
        std::fs::read_to_string(format!("/proc/{pid}/gid_map")).ok()?,
    );
    // The maps read are that namespace's: the process still has it.
    let same = std::fs::metadata(&path).ok()?.ino() == nix::sys::stat::fstat(&ns).ok()?.st_ino;
    let (uid, gid) = expected(map)?;
    (same && parse_map(&maps.0) == uid && parse_map(&maps.1) == gid).then_some(ns)
}

/// The uid that owns user namespace `ns` (`NS_GET_OWNER_UID`).
fn owner_uid(ns: &OwnedFd) -> Option<u32> {
    // _IO(0xb7, 0x4)
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let mut uid: libc::uid_t = 0;
    // SAFETY: the ioctl writes one uid_t through the pointer.
    let r = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID as _, &mut uid) };
    (r == 0).then_some(uid)
}

/// A map line: (first id inside, first id outside, count).
type Extent = (u32, u32, u32);

/// The uid and gid maps `map` writes; None for the identity map, which
/// is never kept (real root keeps the host's user namespace), and for a
/// keep-id map, which is the container's own (nested in a kept one).
fn expected(map: IdMap) -> Option<(Vec<Extent>, Vec<Extent>)> {
    match map {
        IdMap::Identity | IdMap::KeepId { .. } => None,
        IdMap::Single { uid, gid } => Some((vec![(0, uid, 1)], vec![(0, gid, 1)])),
        IdMap::Ranges {
            uid,
            gid,
            subuid,
            subgid,
        } => Some((
            vec![(0, uid, 1), (1, subuid.0, subuid.1)],
            vec![(0, gid, 1), (1, subgid.0, subgid.1)],
        )),
    }
}

/// `/proc/PID/uid_map` text as extents (a malformed line makes it match
/// nothing).
fn parse_map(text: &str) -> Vec<Extent> {
    text.lines()
        .map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            match f[..] {
                [a, b, c] => (a, b, c),
                _ => (u32::MAX, u32::MAX, 0),
            }
        })
        .collect()
}

/// Starts a keeper with a user namespace mapped as `map`, records its pid
/// in `dir`, and returns its namespace.
fn start(dir: &Path, dirfd: &OwnedFd, map: IdMap) -> io::Result<OwnedFd> {
    let mut child = Command::new("/proc/self/exe")
        .arg0("rcfs")
        .arg(KEEPER_COMMAND)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| io::Error::other(format!("cannot start the user namespace keeper: {e}")))?;
    let pid = Pid::from_raw(child.id() as i32);
    let give_up = |child: &mut std::process::Child, e: io::Error| {
        let _ = child.kill();
        let _ = child.wait();
        Err(e)
    };
    let mut said = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = io::BufReader::new(out).read_line(&mut said);
    }
    if said.trim() != "unshared" {
        let e = io::Error::other(format!("the user namespace keeper failed: {}", said.trim()));
        return give_up(&mut child, e);
    }
    if let Err(e) = write_maps(pid, map) {
        return give_up(&mut child, e);
    }
    let ns = match File::open(format!("/proc/{pid}/ns/user")) {
        Ok(f) => OwnedFd::from(f),
        Err(e) => return give_up(&mut child, e),
    };
    let told = child
        .stdin
        .take()
        .map(|mut i| i.write_all(b"mapped\n"))
        .unwrap_or(Ok(()));
    if let Err(e) = told.and_then(|()| write_pid(dirfd, pid)) {
        return give_up(&mut child, e);
    }
    // Not waited for: it outlives this process (and its parent becomes the
    // init, which reaps it).
    drop(child);
    Ok(ns)
}

/// Writes the pid file in `dirfd` at once (a new file renamed over it).
fn write_pid(dirfd: &OwnedFd, pid: Pid) -> io::Result<()> {
    let tmp = format!("{PID_FILE}.{}", std::process::id());
    let fd = openat(
        dirfd,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    File::from(fd).write_all(format!("{pid}\n").as_bytes())?;
    nix::fcntl::renameat(dirfd, tmp.as_str(), dirfd, PID_FILE)?;
    Ok(())
}

/// The keeper (`rcfs userns-keeper DIR`): makes the user namespace, says
/// `unshared` on stdout, waits for `mapped` on stdin, then holds the
/// namespace until it is idle or replaced (see the module doc). Returns
/// the exit code.
pub fn keep(dir: &OsStr) -> i32 {
    // Out of the caller's session: a ^C at its terminal is not for us.
    let _ = nix::unistd::setsid();
    // Its name in `ps` and `pgrep` (started as /proc/self/exe, it would
    // be "exe").
    let _ = nix::sys::prctl::set_name(c"rcfs-keeper");
    let dirfd = match own_private_dir(Path::new(dir), nix::unistd::geteuid().as_raw(), false) {
        Some(fd) => fd,
        None => {
            println!(
                "{}: not a private dir of this user",
                Path::new(dir).display()
            );
            return 1;
        }
    };
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        println!("cannot make a user namespace: {e}");
        return 1;
    }
    println!("unshared");
    let _ = io::stdout().flush();
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
    if line.trim() != "mapped" {
        return 1;
    }
    // Nothing of the caller's stays open, and no dir is held.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: replaces the standard fds with /dev/null.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    crate::close_fds_except(&[dirfd.as_raw_fd()]);
    let _ = std::env::set_current_dir("/");
    let me = std::process::id() as i32;
    loop {
        std::thread::sleep(CHECK);
        let st =
            nix::sys::stat::fstatat(&dirfd, PID_FILE, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
        let used = st.ok().map(|s| {
            SystemTime::UNIX_EPOCH + Duration::new(s.st_mtime as u64, s.st_mtime_nsec as u32)
        });
        match (read_pid(&dirfd), used) {
            (Some(pid), Some(used)) if pid == me => {
                if idle(used, SystemTime::now()) {
                    let _ = nix::unistd::unlinkat(
                        &dirfd,
                        PID_FILE,
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    );
                    return 0;
                }
            }
            _ => return 0,
        }
    }
}

/// Whether a keeper last joined at `used` is idle at `now`.
fn idle(used: SystemTime, now: SystemTime) -> bool {
    now.duration_since(used).is_ok_and(|d| d >= IDLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_read_as_the_kernel_prints_them() {
        let text = "         0       1001          1\n         1     100000      65536\n";
        assert_eq!(parse_map(text), vec![(0, 1001, 1), (1, 100000, 65536)]);
        let want = expected(IdMap::Ranges {
            uid: 1001,
            gid: 1002,
            subuid: (100000, 65536),
            subgid: (200000, 65536),
        })
        .unwrap();
        assert_eq!(parse_map(text), want.0);
        assert_ne!(parse_map(text), want.1, "the gid ranges differ");
        // Another map (a single id, a changed range, junk) is not joined.
        assert_ne!(parse_map("0 1001 1\n"), want.0);
        assert_ne!(parse_map("0 1001 1\n1 100000 1000\n"), want.0);
        assert_ne!(parse_map("0 1001 1\n1 x 65536\n"), want.0);
        assert_eq!(expected(IdMap::Identity), None);
    }

    #[test]
    fn a_keeper_is_idle_after_ten_unused_minutes() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!idle(t, t));
        assert!(!idle(t, t + IDLE - Duration::from_secs(1)));
        assert!(idle(t, t + IDLE));
        // A pid file touched in the future (clock set back) is not idle.
        assert!(!idle(t + Duration::from_secs(60), t));
    }
}
