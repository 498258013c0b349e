//! `rcfs exec [-i] [-t] [-u USER] [-e K=V] [-w DIR] NAME CMD...`: a command
//! in a running container, as podman's exec runs it: in the container's
//! namespaces and cgroups (handed over by the container's `rcfs run`, see
//! [`crate::control::join`]), with the image's environment and user and
//! the container's `-e` values, its seccomp filter and capabilities (see
//! `rcfs_runtime::exec`).

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use rcfs_fs::image::store::Store;
use rcfs_runtime::{Spec, EXIT_RCFS};

/// What `rcfs exec` was asked.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub interactive: bool,
    pub tty: bool,
    pub user: Option<String>,
    /// `KEY=VALUE`, or `KEY` for the caller's value.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub args: Vec<String>,
}

/// Runs the command; its exit code (125 when rcfs failed, 126/127 as for
/// `rcfs run`).
pub fn exec(store: &Store, name: &str, o: &ExecOptions) -> i32 {
    match exec_inner(store, name, o) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rcfs exec: {e:#}");
            EXIT_RCFS
        }
    }
}

/// `KEY=VALUE` (or `KEY`, the caller's value) over `env`, in place.
fn set_env(env: &mut Vec<String>, kv: &str) {
    let (k, v) = match kv.split_once('=') {
        Some((k, v)) => (k.to_owned(), v.to_owned()),
        None => match std::env::var(kv) {
            Ok(v) => (kv.to_owned(), v),
            Err(_) => return,
        },
    };
    let entry = format!("{k}={v}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').is_some_and(|(ek, _)| ek == k))
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

fn exec_inner(store: &Store, name: &str, o: &ExecOptions) -> Result<i32> {
    if o.args.is_empty() {
        bail!("give a command: rcfs exec NAME CMD [ARGS...]");
    }
    let (rec, running) = crate::containers::load(store, name)?;
    if !running {
        bail!("container {name} is not running");
    }
    let opts = rec
        .options
        .clone()
        .context("the container's record has no options: made by an older rcfs")?;
    // The container's spec as its run made it (image config and options).
    let config = crate::containers::image_config(store, &rec)?;
    let dir = store.root.join("containers").join(name);
    let base = crate::run::spec_of(&config, &opts, name, &dir.join("rootfs"))?;
    let mut env = base.env.clone();
    for kv in &o.env {
        set_env(&mut env, kv);
    }
    let spec = Spec {
        args: o.args.clone(),
        env,
        cwd: o.workdir.clone().unwrap_or(base.cwd.clone()),
        user: o.user.clone().unwrap_or(base.user.clone()),
        stdin: o.interactive,
        tty: o.tty,
        seccomp: crate::seccomp::program(store, opts.seccomp.as_deref())?,
        ..base
    };
    let joined = crate::control::join(store, name)?;
    // Still one thread: a terminal that cannot be opened again goes
    // through a pipe (see `relay`), then the helper is forked.
    let mut relays = if o.tty {
        Vec::new()
    } else {
        crate::relay::unopenable_terminals()?
    };
    // The command never gets this process's stdin itself (a process it
    // leaves behind in the container would go on reading it): /dev/null,
    // or with -i a pipe this process fills, closed when it exits.
    let stdin_relay = stdin_for_command(o)?;
    let mut sigs = SigSet::empty();
    for s in rcfs_runtime::FORWARDED {
        sigs.add(s);
    }
    sigs.add(Signal::SIGWINCH);
    sigs.thread_block().context("blocking signals")?;
    let mut started = rcfs_runtime::exec::start(&joined.namespaces, &joined.cgroups, &spec)?;
    drop(joined);
    for r in &mut relays {
        r.start()?;
    }
    if let Some((mut from, mut to)) = stdin_relay {
        std::thread::Builder::new()
            .name("rcfs-stdin".into())
            .spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
            })?;
    }
    let terminal = match started.master.take() {
        Some(m) => Some(crate::run::Terminal::attach(m, o.interactive)?),
        None => None,
    };
    let master = terminal.as_ref().map(|t| t.master.clone());
    let pid = started.pid;
    std::thread::Builder::new()
        .name("rcfs-signals".into())
        .spawn(move || loop {
            match sigs.wait() {
                Ok(Signal::SIGWINCH) => {
                    if let Some(m) = &master {
                        crate::run::copy_window_size(m);
                    }
                }
                Ok(sig) => {
                    let _ = kill(pid, sig);
                }
                Err(_) => {}
            }
        })?;
    let code = started.wait()?;
    drop(terminal);
    drop(relays);
    Ok(code)
}

/// Puts the command's stdin in place on fd 0 (before the helper is
/// forked): /dev/null, or with `-i` (without `-t`, whose pty relays it) a
/// pipe; returns our stdin and the pipe's write end for the thread that
/// fills it.
fn stdin_for_command(o: &ExecOptions) -> Result<Option<(std::fs::File, std::fs::File)>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if o.tty {
        return Ok(None);
    }
    if !o.interactive {
        let null = std::fs::File::open("/dev/null").context("/dev/null")?;
        nix::unistd::dup2_stdin(null).context("dup2 of /dev/null")?;
        return Ok(None);
    }
    // SAFETY: F_DUPFD_CLOEXEC of stdin: a new fd, owned from here on.
    let ours = unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("dup of stdin");
        }
        OwnedFd::from_raw_fd(fd)
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: dup2 onto fd 0, which this process owns (inheritable there).
    if unsafe { libc::dup2(rd.as_raw_fd(), 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("dup2 of a pipe");
    }
    Ok(Some((std::fs::File::from(ours), std::fs::File::from(wr))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn exec_env_values_replace_the_containers() {
        let mut env = vec!["PATH=/bin".to_owned(), "A=1".to_owned()];
        super::set_env(&mut env, "A=2");
        super::set_env(&mut env, "B=x=y");
        assert_eq!(env, ["PATH=/bin", "A=2", "B=x=y"]);
    }
}
