//! The capabilities of the container's command and init, and the resource
//! limits of its command.

use std::io;

use caps::{CapSet, Capability};

use crate::Spec;

/// The capabilities a container's command keeps (in its user namespace):
/// podman's default set.
pub(crate) const KEPT_CAPS: [Capability; 11] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SETFCAP,
];

/// What the init keeps once the command is forked: CAP_KILL, to pass
/// signals on to a command that runs as another user. It waits, reaps and
/// signals; nothing else.
const INIT_CAPS: [Capability; 1] = [Capability::CAP_KILL];

/// Takes every capability but `keep` out of this process's bounding set,
/// so that neither it nor what it execs can ever get them back.
pub(super) fn bound_capabilities(keep: &[Capability]) -> io::Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(io::Error::other)?;
        }
    }
    Ok(())
}

/// Takes every capability but [`KEPT_CAPS`] out of the bounding set, so
/// the command (root of the container's user namespace, which would get
/// them all at exec) never has them. CAP_SYS_ADMIN above all: with it, the
/// container's root could unmount the read-only binds over `/proc/sys` and
/// `/sys` that its init made, and real root's container (identity-mapped)
/// would reach the host's sysctls again.
pub(super) fn drop_capabilities(spec: &Spec) -> io::Result<()> {
    match &spec.caps {
        None => bound_capabilities(&KEPT_CAPS),
        Some(names) => {
            let keep = names
                .iter()
                .map(|n| {
                    n.parse::<Capability>()
                        .map_err(|_| io::Error::other(format!("no capability {n}")))
                })
                .collect::<io::Result<Vec<_>>>()?;
            bound_capabilities(&keep)
        }
    }
}

/// A resource by the name `ulimit` and podman give it.
pub fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "locks" => R::RLIMIT_LOCKS,
        "memlock" => R::RLIMIT_MEMLOCK,
        "msgqueue" => R::RLIMIT_MSGQUEUE,
        "nice" => R::RLIMIT_NICE,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "rss" => R::RLIMIT_RSS,
        "rtprio" => R::RLIMIT_RTPRIO,
        "rttime" => R::RLIMIT_RTTIME,
        "sigpending" => R::RLIMIT_SIGPENDING,
        "stack" => R::RLIMIT_STACK,
        "as" => R::RLIMIT_AS,
        _ => return None,
    })
}

/// The init, once the command is forked: only [`INIT_CAPS`], in every
/// set (bounding, permitted, effective; none inheritable).
pub(super) fn keep_only_init_capabilities() -> io::Result<()> {
    bound_capabilities(&INIT_CAPS)?;
    let keep: caps::CapsHashSet = INIT_CAPS.into_iter().collect();
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new()).map_err(io::Error::other)?;
    caps::set(None, CapSet::Effective, &keep).map_err(io::Error::other)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(io::Error::other)?;
    Ok(())
}
