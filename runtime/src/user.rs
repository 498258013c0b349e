//! The user a container's command runs as: `--user` or the image's `User`
//! (`UID[:GID]` or `USER[:GROUP]`), resolved against the image's
//! `/etc/passwd` and `/etc/group` as podman does.
//!
//! The init resolves it, inside the container's root: the `rcfs run`
//! process must not read its own union mount (were it killed while its
//! main thread waits for an answer of the daemon, whose threads die with
//! it, the process could never exit: a FUSE request once taken by the
//! daemon is waited for uninterruptibly).

use std::path::Path;

/// How much of the image's `/etc/passwd` or `/etc/group` is read: a larger
/// one is refused (the image's to make as large as it likes).
pub const MAX_ID_FILE: u64 = 4 << 20;

/// Whom the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups, set exactly: every group of the image's
    /// `/etc/group` that lists the user's name (a uid's name is its
    /// `/etc/passwd` entry's); a uid without one has its gid. None of the
    /// caller's.
    pub groups: Vec<u32>,
    /// Its home: its passwd entry's, else `/` (the command's HOME when the
    /// image and `-e` give none, as podman sets it).
    pub home: String,
}

/// Resolves `user` in the image's root `root` (already the process's own
/// root in the init: its `/etc/passwd` and `/etc/group`, reached without
/// leaving it; a missing or unreadable one is empty, a too large one an
/// error).
pub(crate) fn in_root(user: &str, root: &Path) -> Result<User, String> {
    let read = |file: &str| -> Result<String, String> {
        match crate::read_in_root(root, file, MAX_ID_FILE) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                Err(format!("the image's /{file}: {e}"))
            }
            Err(_) => Ok(String::new()),
        }
    };
    resolve(user, &read("etc/passwd")?, &read("etc/group")?)
}

/// `user` with the groups `extra` added (`--group-add`: gids, or names in
/// the image's `/etc/group` under `root`).
pub(crate) fn with_groups(mut user: User, extra: &[String], root: &Path) -> Result<User, String> {
    if extra.is_empty() {
        return Ok(user);
    }
    let group = match crate::read_in_root(root, "etc/group", MAX_ID_FILE) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
            return Err(format!("the image's /etc/group: {e}"))
        }
        Err(_) => String::new(),
    };
    for g in extra {
        let gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                })
                .ok_or_else(|| {
                    format!("--group-add {g}: no such group in the image's /etc/group")
                })?,
        };
        if !user.groups.contains(&gid) {
            user.groups.push(gid);
        }
    }
    Ok(user)
}

/// `user` (`UID[:GID]` or `USER[:GROUP]`) against the text of an
/// `/etc/passwd` and an `/etc/group`.
pub(crate) fn resolve(user: &str, passwd: &str, group: &str) -> Result<User, String> {
    let bad = || {
        format!(
            "invalid user {user:?}: give UID[:GID] or a USER[:GROUP] the image's /etc/passwd \
             and /etc/group know"
        )
    };
    let (name_or_uid, group_spec) = match user.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (user, None),
    };
    if name_or_uid.is_empty() {
        return Err(bad());
    }
    // (name, uid, gid, home) of each well-formed passwd entry.
    let users: Vec<(&str, u32, u32, &str)> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3).then_some(())?;
            Some((
                f[0],
                f[2].parse().ok()?,
                f[3].parse().ok()?,
                f.get(5).copied().unwrap_or(""),
            ))
        })
        .collect();
    // (name, gid, members) of each well-formed group entry.
    let groups: Vec<(&str, u32, &str)> = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2).then_some(())?;
            Some((f[0], f[2].parse().ok()?, f.get(3).copied().unwrap_or("")))
        })
        .collect();
    let (name, uid, mut gid, home) = match name_or_uid.parse::<u32>() {
        // A uid's group is its passwd entry's, if it has one, else 0.
        Ok(n) => match users.iter().find(|e| e.1 == n) {
            Some(&(name, _, g, home)) => (Some(name), n, g, home),
            None => (None, n, 0, ""),
        },
        Err(_) => {
            let &(name, uid, gid, home) =
                users.iter().find(|e| e.0 == name_or_uid).ok_or_else(bad)?;
            (Some(name), uid, gid, home)
        }
    };
    if let Some(g) = group_spec {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(bad)?,
        };
    }
    // podman's (runc's) rule: a user of /etc/passwd gets the groups that
    // list them, not their gid again; a bare uid its gid, but root none.
    let mut supplementary = Vec::new();
    match name {
        Some(name) => {
            for &(_, g, members) in &groups {
                if members.split(',').any(|m| m.trim() == name) && !supplementary.contains(&g) {
                    supplementary.push(g);
                }
            }
        }
        None if uid == 0 => {}
        None => supplementary.push(gid),
    }
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        // podman's HOME: the passwd entry's, else /.
        home: Some(home)
            .filter(|h| !h.is_empty())
            .unwrap_or("/")
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";

    #[test]
    fn users_by_number_and_by_name() {
        let group = "root:x:0:\nstaff:x:50:\n";
        let p = |u: &str| resolve(u, PASSWD, group).map(|u| (u.uid, u.gid));
        assert_eq!(p("0").unwrap(), (0, 0));
        assert_eq!(p("1000").unwrap(), (1000, 1001));
        assert_eq!(p("app").unwrap(), (1000, 1001));
        assert_eq!(p("app:staff").unwrap(), (1000, 50));
        assert_eq!(p("7:8").unwrap(), (7, 8));
        assert_eq!(p("7").unwrap(), (7, 0));
        assert!(p("nobody-here").is_err());
        assert!(p(":5").is_err());
        assert!(p("app:nogroup").is_err());
        assert!(p("1:2:3").unwrap_err().contains("1:2:3"));
    }

    /// Supplementary groups as podman gives them (checked with podman 4.3
    /// and runc): the groups of the image's /etc/group that list the user
    /// by name, without its gid; a uid without a passwd entry has its gid.
    #[test]
    fn supplementary_groups_from_the_image() {
        let group = "root:x:0:\nwheel:x:10:root,app\nvideo:x:44:other, app\napp:x:1001:\n\
                     bad\nx:y:zz:app\n";
        let g = |u: &str| resolve(u, PASSWD, group).unwrap().groups;
        assert_eq!(g("app"), [10, 44]);
        assert_eq!(g("1000"), [10, 44]);
        assert_eq!(g("app:wheel"), [10, 44]);
        assert_eq!(g("app:7"), [10, 44]);
        assert_eq!(g("0"), [10]);
        assert_eq!(g("4242"), [0]);
        assert_eq!(g("4242:0"), [0]);
        assert_eq!(g("4242:4243"), [4243]);
    }

    /// The files are read inside the root, bounded: a missing one is
    /// empty, one over [`MAX_ID_FILE`] is refused, a FIFO is not waited on.
    #[test]
    fn id_files_are_read_bounded() {
        let t = tempfile::tempdir().unwrap();
        let u = in_root("7", t.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (7, 0, vec![0]));
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            vec![b'#'; MAX_ID_FILE as usize + 1],
        )
        .unwrap();
        let e = in_root("app", t.path()).unwrap_err();
        assert!(e.contains("/etc/group"), "{e}");
        // A FIFO in /etc/group's place is not waited on (no writer would
        // ever come): it is no regular file, so it counts as empty.
        std::fs::remove_file(t.path().join("etc/group")).unwrap();
        nix::unistd::mkfifo(
            &t.path().join("etc/group"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let u = in_root("app", t.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 1001, vec![]));
    }
}
