//! Containers that outlive the command line: `rcfs run -d` and `rcfs logs`.
//!
//! `rcfs run -d` forks a monitor (podman's conmon, in spirit) and returns
//! once the container's command has started, printing its name. The
//! monitor is the `rcfs run` of the container from then on: in a session
//! of its own, with no terminal, it serves the container's root, holds its
//! init, its cgroups and its lock, takes control requests (`rcfs kill`,
//! `stop`: see [`crate::control`]), and writes what the command prints to
//! `containers/NAME/ctr.log` in podman's `k8s-file` format: one line per
//! piece of output, `TIME STREAM F|P TEXT`, where `P` marks a piece of a
//! line that goes on in the next record. When the command ends it records
//! the exit code, unmounts and exits; killed, it takes the container with
//! it (the init dies with it, and the kernel with the init's pid namespace
//! the rest).

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rcfs_fs::image::store::Store;
use rcfs_fs::sys;

use crate::run::RunOptions;

/// The container's log, in its dir.
pub const LOG: &str = "ctr.log";

/// Pieces of output are read (and logged) at most this many bytes at a time.
const PIECE: usize = 8192;

/// What a monitor starts: a new container, or a stopped one again.
pub enum Start<'a> {
    New(&'a RunOptions),
    Again(&'a str),
}

/// `rcfs run -d`: forks the monitor, which runs the container; returns
/// once the command has started (0, its name printed), or with the
/// monitor's exit code when the container could not start (the monitor
/// said why on this process's stderr).
pub fn run(store: &Store, opts: &RunOptions) -> i32 {
    if opts.tty || opts.interactive {
        eprintln!(
            "rcfs run: -d with -t or -i is not supported (rcfs has no attach): run detached \
             without them, and read the output with rcfs logs"
        );
        return rcfs_runtime::EXIT_RCFS;
    }
    // Named here: a monitor that starts it again needs the name.
    let mut opts = opts.clone();
    opts.name.get_or_insert_with(crate::run::new_id);
    if let Err(e) = crate::run::check_restart(&opts) {
        eprintln!("rcfs run: {e:#}");
        return rcfs_runtime::EXIT_RCFS;
    }
    spawn_monitor(store, Start::New(&opts), "rcfs run")
}

/// `rcfs restart [-t SECS] NAME...`: each stopped (as `rcfs stop` does,
/// when it runs), then started again detached by a monitor of its own,
/// with its restart policy.
pub fn restart(store: &Store, names: &[String], timeout: Duration) -> Result<()> {
    for n in names {
        crate::run::options_of(store, n)?;
        crate::control::stop_quietly(store, n, timeout)?;
        match spawn_monitor(store, Start::Again(n), "rcfs restart") {
            0 => {}
            code => bail!("container {n} could not be started again (exit code {code})"),
        }
    }
    Ok(())
}

/// Forks the monitor of `what`; 0 once its command has started (the name
/// printed), or the monitor's exit code.
fn spawn_monitor(store: &Store, what: Start<'_>, who: &str) -> i32 {
    if let Err(e) = rcfs_runtime::threads::ensure_single("starting a container's monitor") {
        eprintln!("{who}: {e}");
        return rcfs_runtime::EXIT_RCFS;
    }
    let (rd, wr) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{who}: pipe: {e}");
            return rcfs_runtime::EXIT_RCFS;
        }
    };
    // SAFETY: one thread (checked above).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(rd);
            std::process::exit(monitor(store, what, wr));
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(wr);
            let mut said = String::new();
            let _ = File::from(rd).read_to_string(&mut said);
            if let Some(name) = said.strip_prefix("started ") {
                println!("{}", name.trim_end());
                return 0;
            }
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) if code != 0 => code,
                _ => rcfs_runtime::EXIT_RCFS,
            }
        }
        Err(e) => {
            eprintln!("{who}: cannot fork the container's monitor: {e}");
            rcfs_runtime::EXIT_RCFS
        }
    }
}

/// The monitor: a session of its own, stdin from /dev/null; then the
/// container as `rcfs run` runs it, its output to the log (see
/// [`Output`]), started again as its restart policy says (each run in a
/// child of the monitor, which dies with it). `started` gets
/// `started NAME` once the command first runs.
fn monitor(store: &Store, what: Start<'_>, started: OwnedFd) -> i32 {
    let _ = nix::unistd::setsid();
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null);
    }
    let started = Mutex::new(Some(File::from(started)));
    let notify = |name: &str| {
        if let Some(mut f) = started.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = write!(f, "started {name}");
        }
    };
    let (name, policy) = match &what {
        Start::New(opts) => (opts.name.clone().unwrap_or_default(), opts.restart.clone()),
        Start::Again(n) => (
            n.to_string(),
            crate::run::options_of(store, n)
                .ok()
                .and_then(|o| o.restart),
        ),
    };
    crate::control::clear_stopped(store, &name);
    let policy = crate::run::Restart::parse(policy.as_deref()).unwrap_or(crate::run::Restart::No);
    if policy == crate::run::Restart::No {
        return run_once(store, &what, &notify);
    }
    // The first run tells the caller; this process's copy of the pipe goes
    // (the caller reads until it ends).
    let forget = || drop(started.lock().unwrap_or_else(|e| e.into_inner()).take());
    let Ok(mut code) = in_child(|| run_once(store, &what, &notify), forget) else {
        return rcfs_runtime::EXIT_RCFS;
    };
    let mut restarts = 0;
    // The container this monitor keeps: one removed, and another made
    // under its name, is not its to start.
    let created = |store: &Store| {
        crate::containers::load(store, &name)
            .ok()
            .map(|(r, _)| r.created)
    };
    let ours = created(store);
    // Not after rcfs's own failure (125: the container could not be set
    // up, or is gone), which would only come again.
    while code != rcfs_runtime::EXIT_RCFS
        && policy.again(code, restarts)
        && !crate::control::stopped_by_user(store, &name)
    {
        restarts += 1;
        // podman's back-off: 100 ms, doubled each time, 5 minutes at most.
        let wait = Duration::from_millis(100).saturating_mul(1 << restarts.min(12));
        std::thread::sleep(wait.min(Duration::from_secs(300)));
        if crate::control::stopped_by_user(store, &name) || created(store) != ours {
            break;
        }
        match in_child(|| run_once(store, &Start::Again(&name), &|_| {}), || {}) {
            Ok(c) => code = c,
            // The run itself was killed (not its container): no more.
            Err(()) => return rcfs_runtime::EXIT_RCFS,
        }
    }
    code
}

/// Runs `what` once, in this process; its exit code.
fn run_once(store: &Store, what: &Start<'_>, started: &dyn Fn(&str)) -> i32 {
    let r = match what {
        Start::New(opts) => return crate::run::run_detached(store, opts, started),
        Start::Again(n) => crate::run::start_again(store, n, true, started),
    };
    r.unwrap_or_else(|e| {
        eprintln!("rcfs: {e:#}");
        rcfs_runtime::EXIT_RCFS
    })
}

/// Runs `f` in a child of this (one-threaded) process, which dies with it,
/// and `parent` here once it is forked; the child's exit code, or `Err`
/// when it was killed.
fn in_child(f: impl FnOnce() -> i32, parent: impl FnOnce()) -> Result<i32, ()> {
    // SAFETY: the monitor has one thread (its runs are children).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            std::process::exit(f());
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            parent();
            loop {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Ok(c),
                    Ok(nix::sys::wait::WaitStatus::Signaled(..)) => return Err(()),
                    Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
                    Err(_) => return Err(()),
                }
            }
        }
        Err(e) => {
            eprintln!("rcfs: cannot fork the container's run: {e}");
            Err(())
        }
    }
}

/// The container's stdout and stderr in a detached container: pipes in
/// place of this process's fds 1 and 2 (the init and the command inherit
/// them), copied to the log by a thread each. Until [`Output::started`],
/// what comes on stderr also goes to the stderr `rcfs run -d` had (its
/// caller's), so that a container that cannot start says why there.
pub struct Output {
    /// The pipes' read ends and their streams, until [`Output::start`].
    pipes: Vec<(File, &'static str)>,
    log: Arc<Mutex<File>>,
    threads: Vec<JoinHandle<()>>,
    echo: Arc<Mutex<Option<File>>>,
}

impl Output {
    /// Opens (appending: a container started again keeps its log) the log
    /// in the container dir `dir` (0600), and puts the pipes in place.
    /// Call before the init is forked; the threads that copy start with
    /// [`Output::start`], after it.
    pub fn capture(dir: std::os::fd::BorrowedFd<'_>) -> Result<Output> {
        let log = File::from(
            sys::open_at(
                dir,
                LOG.as_ref(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NOFOLLOW,
                0o600,
            )
            .context("cannot open the container's log")?,
        );
        let log = Arc::new(Mutex::new(log));
        // SAFETY: F_DUPFD_CLOEXEC of stderr: a new fd, owned from here on.
        let echo = unsafe {
            let fd = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
            (fd >= 0).then(|| File::from(OwnedFd::from_raw_fd(fd)))
        };
        let echo = Arc::new(Mutex::new(echo));
        let mut pipes = Vec::new();
        for (fd, stream) in [(1, "stdout"), (2, "stderr")] {
            let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
            // SAFETY: dup2 onto a stdio number this process owns (the copy
            // on `fd` is inheritable, `wr` itself is closed on exec).
            if unsafe { libc::dup2(wr.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error()).context("dup2 of a pipe");
            }
            pipes.push((File::from(rd), stream));
        }
        Ok(Output {
            pipes,
            log,
            threads: Vec::new(),
            echo,
        })
    }

    /// Starts copying the output to the log.
    pub fn start(&mut self) -> Result<()> {
        for (from, stream) in self.pipes.drain(..) {
            let log = self.log.clone();
            let echo = (stream == "stderr").then(|| self.echo.clone());
            self.threads.push(
                std::thread::Builder::new()
                    .name("rcfs-log".into())
                    .spawn(move || copy_to_log(from, stream, &log, echo))?,
            );
        }
        Ok(())
    }

    /// The command runs: its stderr goes to the log alone from now on, and
    /// the caller's stderr is let go.
    pub fn started(&self) {
        self.echo.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for Output {
    /// After the container: this process's copies of the pipes' write ends
    /// closed, the rest of the output logged.
    fn drop(&mut self) {
        // Never started (the init was not forked): what was written (why)
        // still goes to the log and the caller.
        let _ = self.start();
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            for fd in [1, 2] {
                // SAFETY: dup2 onto a stdio number this process owns.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
        let t0 = std::time::Instant::now();
        for t in self.threads.drain(..) {
            while !t.is_finished() && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Copies what comes out of `from` to the log as `k8s-file` records of
/// `stream`, each line one `F` record, a piece of a line that goes on
/// past what was read one `P` record.
fn copy_to_log(
    mut from: File,
    stream: &str,
    log: &Mutex<File>,
    echo: Option<Arc<Mutex<Option<File>>>>,
) {
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = &buf[..n];
        if let Some(e) = &echo {
            if let Some(f) = e.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                let _ = f.write_all(data);
            }
        }
        let records = records(&now(), stream, data);
        let _ = log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&records);
    }
}

/// The `k8s-file` records of one piece of output.
fn records(time: &str, stream: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while !rest.is_empty() {
        let (line, tag, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], 'F', &rest[i + 1..]),
            None => (rest, 'P', &rest[rest.len()..]),
        };
        out.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = next;
    }
    out
}

/// Now, as podman's k8s-file logs write it (RFC 3339 with nanoseconds).
fn now() -> String {
    rcfs_fs::image::pull::now_rfc3339().replace('Z', "+00:00")
}

/// One record of a log.
#[derive(Debug, PartialEq)]
struct Record<'a> {
    time: &'a str,
    stderr: bool,
    /// A line's end follows (an `F` record).
    full: bool,
    text: &'a [u8],
}

/// Parses a record (a line of the log without its newline); `None` for
/// what is not one.
fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stderr = match parts.next()? {
        b"stdout" => false,
        b"stderr" => true,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stderr,
        full,
        text: parts.next().unwrap_or_default(),
    })
}

/// What `rcfs logs` prints: `--tail`, `--timestamps`, `-f`.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub follow: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// `rcfs logs NAME`: the output of a detached container, stdout to stdout
/// and stderr to stderr; with `-f`, then what comes until it stops.
pub fn logs(store: &Store, name: &str, o: &LogsOptions) -> Result<()> {
    let dir = crate::containers::open(store, name)?;
    let file = match sys::open_at(
        dir.as_fd(),
        LOG.as_ref(),
        libc::O_RDONLY | libc::O_NOFOLLOW,
        0,
    ) {
        Ok(f) => File::from(f),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            bail!("container {name} has no log: only containers run with -d keep their output")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open the log of {name}")),
    };
    let mut r = io::BufReader::new(file);
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let mut emit = |rec: &Record<'_>, at_line_start: bool| -> io::Result<()> {
        let w: &mut dyn Write = if rec.stderr { &mut err } else { &mut out };
        if o.timestamps && at_line_start {
            w.write_all(rec.time.as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(rec.text)?;
        if rec.full {
            w.write_all(b"\n")?;
        }
        w.flush()
    };
    // Whether the next record starts a line, per stream.
    let mut starts = [true, true];
    let mut line = Vec::new();
    let mut skip = 0usize;
    if let Some(n) = o.tail {
        // Lines (F records) in the log, then those before the last n skipped.
        let mut full = 0usize;
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if parse(trim(&line)).is_some_and(|rec| rec.full) {
                full += 1;
            }
        }
        skip = full.saturating_sub(n);
        r.rewind()?;
    }
    loop {
        line.clear();
        let got = r.read_until(b'\n', &mut line)?;
        if got == 0 || !line.ends_with(b"\n") {
            if !o.follow {
                break;
            }
            // A record still being written, or none yet: wait for more
            // while the container runs, and read what is left once it
            // has stopped.
            if got > 0 {
                r.seek_relative(-(got as i64))?;
            }
            let running = crate::containers::load(store, name).map(|(_, run)| run)?;
            if !running {
                let mut rest = Vec::new();
                r.read_to_end(&mut rest)?;
                for l in rest.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    if let Some(rec) = parse(l) {
                        let s = usize::from(rec.stderr);
                        emit(&rec, starts[s])?;
                        starts[s] = rec.full;
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let Some(rec) = parse(trim(&line)) else {
            continue;
        };
        if skip > 0 {
            if rec.full {
                skip -= 1;
            }
            continue;
        }
        let s = usize::from(rec.stderr);
        emit(&rec, starts[s])?;
        starts[s] = rec.full;
    }
    Ok(())
}

fn trim(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_becomes_k8s_file_records_and_back() {
        let t = "2026-12-07T11:00:00.000000001+00:00";
        let recs = records(t, "stdout", b"one\ntwo\nthr");
        assert_eq!(
            String::from_utf8(recs.clone()).unwrap(),
            format!("{t} stdout F one\n{t} stdout F two\n{t} stdout P thr\n")
        );
        let lines: Vec<Record<'_>> = recs
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse(l).unwrap())
            .collect();
        assert_eq!(lines[0].text, b"one");
        assert!(lines[1].full && !lines[2].full && !lines[2].stderr);
        // An empty line is a record with no text; a record's text may hold
        // spaces.
        let recs = records(t, "stderr", b"\na b c\n");
        assert_eq!(
            String::from_utf8(recs.clone()).unwrap(),
            format!("{t} stderr F \n{t} stderr F a b c\n")
        );
        assert_eq!(
            parse(trim(recs.split_inclusive(|&b| b == b'\n').nth(1).unwrap()))
                .unwrap()
                .text,
            b"a b c"
        );
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(format!("{t} stdin F x").as_bytes()), None);
    }
}
