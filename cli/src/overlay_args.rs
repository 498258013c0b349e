//! fuse-overlayfs's command line, so that `rcfs-overlay` drops in for it:
//!
//! ```text
//! rcfs-overlay [-f] [-d] -o lowerdir=A:B,upperdir=U,workdir=W[,...] MOUNTPOINT
//! rcfs-overlay SOURCE MOUNTPOINT -o ...      (the form mount.fuse3 passes)
//! ```
//! Options rcfs has no use for are warned about and ignored, as
//! fuse-overlayfs does; generic mount flags (`rw`, `exec`, ...) silently.
//! `suid`/`nosuid`/`dev`/`nodev` are honoured as root (the last one given
//! wins); as root the defaults are fuse-overlayfs's: `suid` and `nodev`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::mount::{parse_timeout, split_lowers, MountRequest};

/// A parsed command line: a mount, or a request for help/version.
#[derive(Debug)]
pub enum Parsed {
    Mount(Box<MountRequest>, Vec<String>),
    Help,
    Version,
}

/// Generic mount(8) flags that carry no meaning for the union.
const GENERIC: &[&str] = &[
    "rw",
    "ro",
    "exec",
    "noexec",
    "norelatime",
    "diratime",
    "nodiratime",
    "async",
    "sync",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "default_permissions",
    "defaults",
];

/// Parses `args` (without the program name). Returns the request and the
/// warnings to print.
pub fn parse(args: &[String]) -> Result<Parsed> {
    parse_as(args, nix::unistd::geteuid().is_root())
}

/// [`parse`] for a caller who is root (of its user namespace) or not.
fn parse_as(args: &[String], root: bool) -> Result<Parsed> {
    let mut opts: Vec<String> = Vec::new();
    let mut positional = Vec::new();
    let mut foreground = false;
    let mut debug = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts.push(it.next().context("-o needs an argument")?.clone()),
            "-f" => foreground = true,
            "-d" | "--debug" => debug = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            s if s.starts_with("-o") && s.len() > 2 => opts.push(s[2..].to_string()),
            s if s.starts_with('-') && s.len() > 1 => {
                bail!("unknown flag {s}; see rcfs-overlay --help")
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let mountpoint = match positional.len() {
        1 => positional.remove(0),
        2 => positional.remove(1),
        0 => bail!("no mountpoint given; usage: rcfs-overlay -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT"),
        _ => bail!("too many arguments; usage: rcfs-overlay -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT"),
    };
    let mut req = MountRequest::new(Vec::new(), None, None, mountpoint);
    // The upper dir may be read by other tools (podman's diff) as a plain
    // tree, so data is always copied up here unless asked otherwise.
    req.metacopy = false;
    req.fsname = "rcfs-overlay".into();
    req.subtype = "rcfs-overlay".into();
    // fuse-overlayfs's defaults: `default_permissions,noatime`, and as root
    // also `allow_other,suid` (a container's other uids must get in, and
    // its setuid programs work).
    req.noatime = true;
    // fuse-overlayfs 1.10 as root: `suid`, and libfuse's `nodev` (device
    // nodes in a container's root are not the host's to honour; podman
    // makes the container's /dev itself). A user's mount is always
    // nosuid,nodev (fusermount3).
    req.suid = root;
    req.dev = false;
    if root {
        req.allow_other = true;
    }
    let mut warnings = Vec::new();
    for opt in opts.iter().flat_map(|o| split_options(o)) {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, val) {
            ("lowerdir", Some(v)) => req.lowers = split_lowers(v),
            ("upperdir", Some(v)) => req.upper = Some(PathBuf::from(v)),
            ("workdir", Some(v)) => req.work = Some(PathBuf::from(v)),
            ("allow_other", None) | ("allow_root", None) => req.allow_other = true,
            ("fsname", Some(v)) => req.fsname = v.to_string(),
            ("timeout", Some(v)) => req.ttl = parse_timeout(v)?,
            ("atime", None) | ("relatime", None) | ("strictatime", None) => req.noatime = false,
            ("noatime", None) => req.noatime = true,
            ("metacopy", Some("on")) => req.metacopy = true,
            ("metacopy", Some("off")) => req.metacopy = false,
            ("passthrough", Some("off")) => req.passthrough = false,
            ("volatile", None) | ("fsync", Some("0")) => req.fsync = false,
            ("fsync", Some("1")) => req.fsync = true,
            ("debug", None) => debug = true,
            ("suid", None) => req.suid = root,
            ("nosuid", None) => req.suid = false,
            ("dev", None) => req.dev = root,
            ("nodev", None) => req.dev = false,
            (k, None) if GENERIC.contains(&k) => {}
            _ => warnings.push(format!("rcfs-overlay: unknown option {opt} ignored")),
        }
    }
    if req.lowers.is_empty() {
        bail!("no lowerdir= given; usage: rcfs-overlay -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT");
    }
    req.foreground = foreground || debug;
    req.debug = debug;
    Ok(Parsed::Mount(Box::new(req), warnings))
}

/// Splits a comma-separated option string; a backslash escapes a comma.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn mount(s: &[&str]) -> (MountRequest, Vec<String>) {
        match parse(&args(s)).unwrap() {
            Parsed::Mount(r, w) => (*r, w),
            p => panic!("not a mount: {p:?}"),
        }
    }

    #[test]
    fn fuse_overlayfs_form() {
        let (r, w) = mount(&["-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w", "/mnt"]);
        assert_eq!(r.lowers, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(r.upper, Some(PathBuf::from("/u")));
        assert_eq!(r.work, Some(PathBuf::from("/w")));
        assert_eq!(r.mountpoint, PathBuf::from("/mnt"));
        assert!(!r.foreground);
        assert!(w.is_empty());
    }

    #[test]
    fn mount_helper_form_with_unknown_options() {
        let (r, w) = mount(&[
            "overlay",
            "/mnt",
            "-o",
            "rw,lowerdir=/a,upperdir=/u,workdir=/w,squash_to_root,nodev",
            "-f",
        ]);
        assert_eq!(r.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(r.lowers, vec![PathBuf::from("/a")]);
        assert!(r.foreground);
        assert_eq!(
            w,
            vec!["rcfs-overlay: unknown option squash_to_root ignored".to_string()]
        );
    }

    #[test]
    fn several_o_flags_and_timeout() {
        let (r, _) = mount(&["-o", "lowerdir=/a", "-o", "timeout=2.5,allow_other", "/m"]);
        assert_eq!(r.ttl, Duration::from_millis(2500));
        assert!(r.allow_other);
        assert!(r.upper.is_none());
    }

    #[test]
    fn errors_are_clear() {
        let e = parse(&args(&["-o", "upperdir=/u", "/m"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lowerdir"), "{e}");
        let e = parse(&args(&["-o", "lowerdir=/a"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mountpoint"), "{e}");
        assert!(matches!(parse(&args(&["--help"])).unwrap(), Parsed::Help));
    }

    fn mount_as(s: &[&str], root: bool) -> MountRequest {
        match parse_as(&args(s), root).unwrap() {
            Parsed::Mount(r, w) => {
                assert!(w.is_empty(), "{w:?}");
                *r
            }
            p => panic!("not a mount: {p:?}"),
        }
    }

    /// As root: fuse-overlayfs's defaults (suid, nodev), and podman's
    /// `nosuid`/`nodev`/`suid`/`dev` honoured, the last one given winning.
    /// A user's mount is nosuid,nodev whatever is asked (fusermount3).
    #[test]
    fn suid_and_dev_options() {
        let base = "lowerdir=/a,upperdir=/u,workdir=/w";
        let r = mount_as(&["-o", base, "/m"], true);
        assert!(r.suid && !r.dev, "root's defaults: {} {}", r.suid, r.dev);
        let r = mount_as(&["-o", &format!("{base},nosuid,nodev"), "/m"], true);
        assert!(!r.suid && !r.dev, "nosuid,nodev: {} {}", r.suid, r.dev);
        let r = mount_as(&["-o", &format!("{base},dev,nosuid"), "/m"], true);
        assert!(!r.suid && r.dev, "dev,nosuid: {} {}", r.suid, r.dev);
        let r = mount_as(&["-o", &format!("nosuid,{base},suid"), "/m"], true);
        assert!(r.suid, "nosuid then suid");
        let r = mount_as(&["-o", &format!("{base},suid,dev"), "/m"], false);
        assert!(!r.suid && !r.dev, "a user's: {} {}", r.suid, r.dev);
    }

    #[test]
    fn escaped_comma() {
        assert_eq!(
            split_options(r"lowerdir=/a\,b,x"),
            vec!["lowerdir=/a,b".to_string(), "x".to_string()]
        );
    }
}
