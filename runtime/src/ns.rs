//! Entering a user namespace in which the caller is root, with a mount
//! namespace of its own.

use std::io::{self, Read, Write};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{ForkResult, Pid};

/// How ids map into the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMap {
    /// Real root: every id maps to itself, so files keep their owners.
    Identity,
    /// An ordinary user: only the caller's uid and gid, as 0. Files of the
    /// image owned by other ids show as the overflow id (65534).
    Single { uid: u32, gid: u32 },
    /// An ordinary user with `/etc/subuid` and `/etc/subgid` ranges (and
    /// newuidmap/newgidmap): the caller as 0, the ranges as 1 and up, so
    /// files of other owners keep distinct owners.
    Ranges {
        uid: u32,
        gid: u32,
        /// (first host id, count)
        subuid: (u32, u32),
        subgid: (u32, u32),
    },
    /// `--userns=keep-id`: a namespace nested in an ordinary user's own
    /// ([`IdMap::Ranges`]: the user as 0, the subuid range as 1 to `uids`)
    /// in which the user's ids are their own numbers again: `uid` is the
    /// user (0 outside), 0 to `uid - 1` are 1 to `uid` outside, and the
    /// rest of the range follows. The same for gids.
    KeepId {
        uid: u32,
        gid: u32,
        uids: u32,
        gids: u32,
    },
}

impl IdMap {
    /// The nested map `--userns=keep-id` makes in this (an ordinary user's
    /// own) namespace; an error that says why there is none.
    pub fn keep_id(&self) -> Result<IdMap, String> {
        match *self {
            IdMap::Ranges {
                uid,
                gid,
                subuid,
                subgid,
            } if uid < subuid.1 && gid < subgid.1 => Ok(IdMap::KeepId {
                uid,
                gid,
                uids: subuid.1,
                gids: subgid.1,
            }),
            IdMap::Ranges { .. } => Err(
                "--userns=keep-id needs /etc/subuid and /etc/subgid ranges larger than your uid and gid".into(),
            ),
            IdMap::Identity => Err("--userns=keep-id is for ordinary users (as podman's)".into()),
            _ => Err(
                "--userns=keep-id needs /etc/subuid and /etc/subgid ranges (and newuidmap/newgidmap)".into(),
            ),
        }
    }
}

/// The lines of a nested keep-id map for `own` within ids 0 to `count`.
fn keep_id_map(own: u32, count: u32) -> String {
    format!(
        "0 1 {own}\n{own} 0 1\n{} {} {}\n",
        own + 1,
        own + 1,
        count - own
    )
}

/// The first range of `file` (`/etc/subuid` form: `USER:START:COUNT`, the
/// user by name or number) for the user `name` / `id`.
fn sub_range(file: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || !(Some(f[0]) == name || f[0] == id.to_string()) {
            return None;
        }
        let (start, count) = (f[1].parse().ok()?, f[2].parse().ok()?);
        (count > 0).then_some((start, count))
    })
}

/// Where a program is on the PATH.
fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// How the caller's ids map: identity for root; the subuid ranges when it
/// has some and newuidmap/newgidmap are there; else only its own ids.
fn choose_map() -> IdMap {
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if uid == 0 {
        return IdMap::Identity;
    }
    let name = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let ranges = (
        sub_range("/etc/subuid", name.as_deref(), uid),
        sub_range("/etc/subgid", name.as_deref(), uid),
        which("newuidmap").zip(which("newgidmap")),
    );
    match ranges {
        (Some(subuid), Some(subgid), Some(_)) => IdMap::Ranges {
            uid,
            gid,
            subuid,
            subgid,
        },
        _ => {
            eprintln!(
                "rcfs: note: only your own uid is mapped into the container (no /etc/subuid and \
                 /etc/subgid range for {}, or no newuidmap/newgidmap: package uidmap); files \
                 the image gives other owners show as nobody",
                name.as_deref().unwrap_or("you")
            );
            IdMap::Single { uid, gid }
        }
    }
}

/// Writes `map` as the id maps of process `pid`'s user namespace.
pub(crate) fn write_maps(pid: Pid, map: IdMap) -> io::Result<()> {
    let write = |file: &str, text: &str| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| io::Error::other(format!("cannot write /proc/{pid}/{file}: {e}")))
    };
    match map {
        IdMap::Identity => {
            write("uid_map", "0 0 4294967295\n")?;
            write("gid_map", "0 0 4294967295\n")?;
        }
        IdMap::KeepId {
            uid,
            gid,
            uids,
            gids,
        } => {
            write("uid_map", &keep_id_map(uid, uids))?;
            write("gid_map", &keep_id_map(gid, gids))?;
        }
        IdMap::Single { uid, gid } => {
            // An unprivileged map of one's own gid needs setgroups denied.
            write("setgroups", "deny")?;
            write("uid_map", &format!("0 {uid} 1\n"))?;
            write("gid_map", &format!("0 {gid} 1\n"))?;
        }
        IdMap::Ranges {
            uid,
            gid,
            subuid,
            subgid,
        } => {
            // The setuid helpers check the ranges against /etc/sub[ug]id.
            // Both run at once: each is a setuid exec, a few ms here.
            let mut running = Vec::new();
            for (prog, own, (start, count)) in
                [("newuidmap", uid, subuid), ("newgidmap", gid, subgid)]
            {
                let child = std::process::Command::new(prog)
                    .arg(pid.to_string())
                    .args([
                        "0",
                        &own.to_string(),
                        "1",
                        "1",
                        &start.to_string(),
                        &count.to_string(),
                    ])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| io::Error::other(format!("cannot run {prog}: {e}")))?;
                running.push((prog, child));
            }
            let mut failed = None;
            for (prog, child) in running {
                let out = child.wait_with_output()?;
                if !out.status.success() && failed.is_none() {
                    failed = Some(format!(
                        "{prog} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            if let Some(f) = failed {
                return Err(io::Error::other(f));
            }
        }
    }
    Ok(())
}

/// Moves this process into a user namespace in which it is root, with the
/// ids mapped as [`IdMap`] says: the one the user's keeper holds
/// ([`crate::keeper`]), else a new one of its own; then into a new mount
/// namespace whose mounts do not propagate anywhere. Fails unless the
/// process has one thread.
pub fn enter_user_namespace() -> io::Result<IdMap> {
    crate::threads::ensure_single("entering a user namespace")?;
    let map = choose_map();
    if crate::keeper::join(map).is_err() {
        own_user_namespace(map)?;
    }
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| io::Error::other(format!("cannot make a mount namespace: {e}")))?;
    make_private()?;
    Ok(map)
}

/// Moves this process into a new user namespace mapped as `map`.
fn own_user_namespace(map: IdMap) -> io::Result<()> {
    // The maps are written from outside the namespace (a process inside
    // has no capability over the parent's ids): by a helper forked first,
    // which waits until this process has unshared.
    let me = nix::unistd::getpid();
    let (go_rd, go_wr) = nix::unistd::pipe()?;
    let (done_rd, done_wr) = nix::unistd::pipe()?;
    // SAFETY: a single thread, checked by enter_user_namespace, the only
    // caller.
    let helper = match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(go_wr);
            drop(done_rd);
            let mut b = [0u8; 1];
            let r = match std::fs::File::from(go_rd).read(&mut b) {
                Ok(1) => write_maps(me, map),
                _ => Err(io::Error::other("rcfs run gave up")),
            };
            let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
            let _ = std::fs::File::from(done_wr).write_all(msg.as_bytes());
            std::process::exit(0);
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_rd);
    drop(done_wr);
    let unshared = unshare(CloneFlags::CLONE_NEWUSER);
    {
        let mut w = std::fs::File::from(go_wr);
        if unshared.is_ok() {
            let _ = w.write_all(b"1");
        }
    }
    let mut msg = String::new();
    let _ = std::fs::File::from(done_rd).read_to_string(&mut msg);
    let _ = nix::sys::wait::waitpid(helper, None);
    unshared.map_err(|e| {
        io::Error::other(format!(
            "cannot make a user namespace ({e}): user namespaces may be disabled \
             (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
        ))
    })?;
    if !msg.is_empty() {
        return Err(io::Error::other(msg));
    }
    Ok(())
}

/// Moves this process (real root) into a new mount namespace whose mounts
/// do not propagate anywhere, staying in the host's user namespace: root's
/// fs daemon keeps the capabilities FUSE passthrough needs, and the
/// container gets a user namespace of its own ([`crate::Container::fork`]).
pub fn enter_mount_namespace() -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| io::Error::other(format!("cannot make a mount namespace: {e}")))?;
    make_private()
}

fn make_private() -> io::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("cannot make mounts private: {e}")))
}

#[cfg(test)]
mod tests {
    /// keep-id: the user's own id is itself, and every other id of the
    /// range has a place, once.
    #[test]
    fn a_keep_id_map_puts_the_users_id_in_its_place() {
        assert_eq!(
            super::keep_id_map(1000, 65536),
            "0 1 1000\n1000 0 1\n1001 1001 64536\n"
        );
        let m = super::IdMap::Ranges {
            uid: 70000,
            gid: 10,
            subuid: (100000, 65536),
            subgid: (100000, 65536),
        };
        assert!(m.keep_id().is_err());
        assert!(super::IdMap::Identity.keep_id().is_err());
    }
}
