//! The container's `/dev`: a tmpfs of its own (mode 0755, nosuid, noexec)
//! holding `null`, `zero`, `full`, `random`, `urandom` and `tty`, the
//! links `fd`, `stdin`, `stdout`, `stderr` and `ptmx`, and the mounts
//! `pts` (a devpts instance of its own), `shm` and `mqueue`.
//!
//! The device nodes must not be the host's inodes where the container
//! could change them. Real root's container is root of an identity-mapped
//! user namespace: the host's root-owned nodes are its own there, so a
//! bind of the host's `/dev/full` would let it `chmod 000` the host's. So
//! for real root the nodes are made by `mknod` ([`prepare`]), in a tmpfs
//! that `rcfs run` makes in the host's user namespace before it forks the
//! init: only there is `mknod` allowed (CAP_MKNOD of the initial user
//! namespace), and only a tmpfs made there lets its nodes be opened. The
//! init moves that tmpfs onto the container's `/dev`. An ordinary user's
//! container cannot make device nodes at all, and gets binds of the host's
//! (as podman does rootless): the host's root, who owns them, is not mapped
//! in its user namespace, so a `chmod` or `chown` of them is refused; and
//! the binds are read-only besides (EROFS), which also covers root of
//! another user namespace that cannot make nodes ([`prepare`]).
//!
//! `/dev/tty` is the device of the opener's controlling terminal: the
//! command has none of the host's (a session of its own), so it opens
//! nothing, or the container's own pty with `-t`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::mount::MsFlags;
use nix::sys::stat::{fchmodat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};

use super::{err, in_root, mount_in, readonly_in};

/// The device nodes: name, major, minor (all character devices, 0666).
const NODES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks: name, target.
const LINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Where `pts`, `shm` and `mqueue` are mounted.
const DIRS: [&str; 3] = ["pts", "shm", "mqueue"];

/// The tmpfs's options: its root's mode and its size (as podman's).
const TMPFS_MODE: &str = "755";
const TMPFS_SIZE: &str = "65536k";

/// A new syscall's result as an fd.
fn fd_of(r: libc::c_long, what: &str) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(err(what, io::Error::last_os_error()));
    }
    // SAFETY: a new fd the syscall returned.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Real root, in `rcfs run` before it forks the init: a detached tmpfs
/// (new mount API, so it is on no path anyone could reach) with the
/// device nodes made by `mknod`, the links and the mount points. Its fd
/// goes to the init, which moves it onto the container's `/dev` ([`mount`]).
///
/// `None` where this process may not make device nodes (root of a user
/// namespace other than the host's, or without CAP_MKNOD): the init then
/// binds the host's, read-only, as for an ordinary user.
pub(crate) fn prepare() -> io::Result<Option<OwnedFd>> {
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let (name, mode_key, mode, size_key, size) = (
        c("tmpfs")?,
        c("mode")?,
        c(TMPFS_MODE)?,
        c("size")?,
        c(TMPFS_SIZE)?,
    );
    // SAFETY: fsopen with a C string.
    let fs = fd_of(
        unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) },
        "fsopen tmpfs for the container's /dev",
    )?;
    for (k, v) in [(&mode_key, &mode), (&size_key, &size)] {
        // SAFETY: fsconfig with C strings on our fs context.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                libc::FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            return Err(err(
                "configuring the /dev tmpfs",
                io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: fsconfig with no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(err("making the /dev tmpfs", io::Error::last_os_error()));
    }
    // SAFETY: fsmount of our fs context.
    let mnt = fd_of(
        unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                fs.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
            )
        },
        "fsmount of the /dev tmpfs",
    )?;
    for (n, major, minor) in NODES {
        let made = mknodat(
            mnt.as_fd(),
            n,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        );
        match made {
            Ok(()) => {}
            Err(nix::errno::Errno::EPERM) => return Ok(None),
            Err(e) => return Err(err(&format!("mknod /dev/{n}"), e)),
        }
        // The mode on purpose, whatever the umask took away (a node just
        // made in a tmpfs no one else can reach: no link to follow).
        fchmodat(
            mnt.as_fd(),
            n,
            Mode::from_bits_truncate(0o666),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| err(&format!("chmod /dev/{n}"), e))?;
    }
    links_and_dirs(mnt.as_fd())?;
    Ok(Some(mnt))
}

/// The links and mount points, in the container's fresh `/dev` at `dev`.
fn links_and_dirs(dev: BorrowedFd<'_>) -> io::Result<()> {
    for (name, target) in LINKS {
        nix::unistd::symlinkat(target, dev, name).map_err(|e| err(&format!("/dev/{name}"), e))?;
    }
    for d in DIRS {
        mkdirat(dev, d, Mode::from_bits_truncate(0o755))
            .map_err(|e| err(&format!("mkdir /dev/{d}"), e))?;
        fchmodat(
            dev,
            d,
            Mode::from_bits_truncate(0o755),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| err(&format!("chmod /dev/{d}"), e))?;
    }
    Ok(())
}

/// In the init (its own mount namespace, before `pivot_root`): the
/// container's `/dev` in the root `root`. `prepared` is real root's tmpfs
/// from [`prepare`], moved there; without it (an ordinary user) a tmpfs is
/// mounted and the host's nodes bound into it, read-only (a bind of a
/// device node still opens for writing; a chmod, chown or utimes of it
/// fails with EROFS even where the namespace maps the nodes' owner). Then
/// `pts`, `shm` and `mqueue` of the container's own.
pub(super) fn mount(
    root: BorrowedFd<'_>,
    prepared: Option<OwnedFd>,
    shm_size: Option<u64>,
) -> io::Result<()> {
    let none = None::<&str>;
    match prepared {
        Some(mnt) => {
            let target = in_root(root, "dev", true).map_err(|e| err("the container's dev", e))?;
            let empty = CString::default();
            // SAFETY: move_mount of a detached mount fd onto an fd, with
            // empty paths.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    mnt.as_raw_fd(),
                    empty.as_ptr(),
                    target.as_raw_fd(),
                    empty.as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
                )
            };
            if r < 0 {
                return Err(err(
                    "moving the /dev tmpfs onto the container's dev",
                    io::Error::last_os_error(),
                ));
            }
        }
        None => {
            mount_in(
                root,
                "dev",
                true,
                "tmpfs",
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME,
                Some(&format!("mode={TMPFS_MODE},size={TMPFS_SIZE}")),
            )?;
            let dev = in_root(root, "dev", true)?;
            links_and_dirs(dev.as_fd())?;
            for (name, _, _) in NODES {
                let host = format!("/dev/{name}");
                let rel = format!("dev/{name}");
                mount_in(root, &rel, false, &host, none, MsFlags::MS_BIND, none)?;
                readonly_in(root, &rel)?;
            }
        }
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_in(
        root,
        "dev/pts",
        true,
        "devpts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_in(
        root,
        "dev/shm",
        true,
        "shm",
        Some("tmpfs"),
        nosuid,
        // podman's default "64m" is 65,536,000 bytes.
        Some(&format!(
            "mode=1777,size={}",
            shm_size.unwrap_or(65_536_000)
        )),
    )?;
    mount_in(
        root,
        "dev/mqueue",
        true,
        "mqueue",
        Some("mqueue"),
        nosuid,
        none,
    )?;
    Ok(())
}

/// The host devices of `--device`, bound over files made in the
/// container's `/dev`. A bind opens what the host lets the user open, no
/// more.
pub(super) fn devices(root: BorrowedFd<'_>, devices: &[crate::Device]) -> io::Result<()> {
    for d in devices {
        let rel = d.target.trim_start_matches('/');
        let host = d.host.display().to_string();
        mount_in(
            root,
            rel,
            false,
            &host,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
    }
    Ok(())
}
