//! `rcfs run`'s options that need checking and turning into the init's
//! terms: capabilities, `--tmpfs`, `--ulimit`.

use anyhow::{bail, Result};

use super::RunOptions;

/// podman's default capabilities of a container's command.
pub const DEFAULT_CAPS: [&str; 11] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_SETFCAP",
];

/// A capability's name as `CAP_…` (podman takes `net_admin`, `NET_ADMIN`
/// and `CAP_NET_ADMIN`); an error for one the kernel does not have.
pub(super) fn cap_name(n: &str) -> Result<String> {
    let up = n.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    full.parse::<caps::Capability>()
        .map_err(|_| anyhow::anyhow!("unknown capability {n:?}"))?;
    Ok(full)
}

/// The command's capabilities: podman's default set, `--cap-drop` taken
/// out, then `--cap-add` put in (`ALL` for every one); `None` when neither
/// was given.
pub(super) fn capabilities(opts: &RunOptions) -> Result<Option<Vec<String>>> {
    if opts.cap_add.is_empty() && opts.cap_drop.is_empty() {
        return Ok(None);
    }
    let all = || -> Vec<String> { caps::all().into_iter().map(|c| c.to_string()).collect() };
    let mut set: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    for d in &opts.cap_drop {
        if d.eq_ignore_ascii_case("all") {
            set.clear();
        } else {
            let d = cap_name(d)?;
            set.retain(|c| *c != d);
        }
    }
    for a in &opts.cap_add {
        let add = if a.eq_ignore_ascii_case("all") {
            all()
        } else {
            vec![cap_name(a)?]
        };
        for c in add {
            if !set.contains(&c) {
                set.push(c);
            }
        }
    }
    Ok(Some(set))
}

/// `--tmpfs PATH[:OPTIONS]`: (absolute path, mount options), podman 4.3's
/// default rw,nosuid,nodev (`noexec` refuses programs; nosuid,nodev
/// always). `noexec` travels in the options for the init to take out.
pub(super) fn tmpfs_of(v: &str) -> Result<(String, String)> {
    let (path, opts) = v.split_once(':').unwrap_or((v, ""));
    // podman 4.3's default (its oracle, whatever its manual says): exec.
    let mut exec = true;
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        bail!("--tmpfs {v:?}: the path must be absolute, without '..'");
    }
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=').map_or(o, |(k, _)| k) {
            "size" | "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks" => data.push(o.to_owned()),
            // Flags: rcfs mounts every tmpfs nosuid,nodev.
            "rw" | "nosuid" | "nodev" => {}
            "exec" => exec = true,
            "noexec" => exec = false,
            _ => bail!("--tmpfs {v:?}: rcfs does not support the option {o:?} (size, mode, uid, gid, nr_inodes)"),
        }
    }
    if !exec {
        data.push("noexec".into());
    }
    Ok((path.to_owned(), data.join(",")))
}

/// The command's resource limits: `--ulimit`, and podman's defaults for
/// open files and processes where it gives none: as many as the caller's
/// hard limit allows (at most 1,048,576 files; 32,768 processes for a
/// user, 4,194,304 for root), soft and hard alike.
pub(super) fn rlimits(opts: &super::RunOptions) -> Result<Vec<(String, u64, u64)>> {
    let mut out = opts
        .ulimit
        .iter()
        .map(|u| ulimit_of(u))
        .collect::<Result<Vec<_>>>()?;
    let root = rcfs_runtime::real_root();
    for (name, resource, most) in [
        (
            "nofile",
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            1 << 20,
        ),
        (
            "nproc",
            nix::sys::resource::Resource::RLIMIT_NPROC,
            if root { 4_194_304 } else { 32_768 },
        ),
    ] {
        if out.iter().any(|(n, _, _)| n == name) {
            continue;
        }
        let Ok((_, hard)) = nix::sys::resource::getrlimit(resource) else {
            continue;
        };
        // Never above the hard limit: the container's root (real root's
        // too, in its own user namespace) cannot raise it.
        let n = hard.min(most);
        out.push((name.to_owned(), n, n));
    }
    Ok(out)
}

/// `--ulimit NAME=SOFT[:HARD]` (`-1` or `unlimited` for no limit).
pub(super) fn ulimit_of(v: &str) -> Result<(String, u64, u64)> {
    let bad =
        || anyhow::anyhow!("invalid --ulimit {v:?}: give NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    let (name, vals) = v.split_once('=').ok_or_else(bad)?;
    if rcfs_runtime::rlimit_resource(name).is_none() {
        bail!("--ulimit {v:?}: unknown resource {name:?}");
    }
    let num = |n: &str| -> Result<u64> {
        match n {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => n.parse().map_err(|_| bad()),
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard {
        bail!("--ulimit {v:?}: the soft limit is over the hard one");
    }
    Ok((name.to_owned(), soft, hard))
}
