//! `rcfs run`: a container on the image's lazy union root, rootless.
//!
//! This process enters a user and mount namespace of its own, forks the
//! container's init (while it is still single-threaded), mounts the image's
//! union there as the container's root (the same daemon code as `rcfs
//! mount`, in threads of this process, outside the container's pid
//! namespace), hands the init its spec, passes signals on to it, and exits
//! with its exit code once it is gone, unmounting first. See
//! `rcfs_runtime` for what the init does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use oci_spec::image::ImageConfiguration;
use rcfs_fs::image::digest::Digest;
use rcfs_fs::image::open::CacheOptions;
use rcfs_fs::image::store::Store;
use rcfs_runtime::{Container, Spec, EXIT_RCFS};

use crate::mount::{self, ImageMount, MountRequest};

mod options;
mod spec;
mod terminal;

pub use options::DEFAULT_CAPS;
use options::{capabilities, tmpfs_of, ulimit_of};
pub(crate) use spec::spec_of;
use spec::{dns_servers, network_files};
pub(crate) use terminal::{copy_window_size, Terminal};

/// What `rcfs run` was asked (kept in the container's record, for `rcfs
/// start`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunOptions {
    pub image: String,
    /// Replaces the image's Cmd.
    pub args: Vec<String>,
    pub name: Option<String>,
    /// Remove the container (its upper dir) when it ends.
    pub rm: bool,
    /// `KEY=VALUE`, or `KEY` to take the caller's value.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `UID[:GID]` or `USER[:GROUP]`.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub interactive: bool,
    /// `-t`: a terminal for the command.
    pub tty: bool,
    pub net_none: bool,
    pub insecure: bool,
    /// `--unverified-streaming`: see [`ImageMount`].
    #[serde(default)]
    pub unverified_streaming: bool,
    /// `-v HOST:CTR[:ro]`, `-v VOLUME:CTR[:ro]`.
    pub volumes: Vec<String>,
    /// `--mount type=bind|volume|tmpfs,...` (see [`crate::volume`]).
    #[serde(default)]
    pub mounts: Vec<String>,
    /// `--device HOST[:CTR][:PERMS]`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// `--shm-size` in bytes.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--memory`, `--cpus`, `--pids-limit`.
    #[serde(default)]
    pub memory: Option<u64>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// `--security-opt seccomp=`: a profile file or `unconfined`; `None`:
    /// the default (see `rcfs_runtime::seccomp::choose`). The file is read
    /// again by `rcfs start`.
    #[serde(default)]
    pub seccomp: Option<String>,
    /// `--init`: rcfs's init stays pid 1 and runs the command as its child.
    #[serde(default)]
    pub init: bool,
    /// `-d`: run from a monitor, the output to the container's log (see
    /// [`crate::detach`]).
    #[serde(default)]
    pub detach: bool,
    /// `--entrypoint`: replaces the image's (and drops its Cmd, as podman
    /// does); an empty list clears it.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `--stop-signal` (else the image's StopSignal, else SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// `--cap-add`, `--cap-drop` (`CAP_…` names or `ALL`), in order.
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--group-add`.
    #[serde(default)]
    pub group_add: Vec<String>,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `--tmpfs PATH[:OPTIONS]`.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    #[serde(default)]
    pub ulimit: Vec<String>,
    /// `--label KEY=VALUE`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// `--pull=always|missing|never` (`None`: missing).
    #[serde(default)]
    pub pull: Option<String>,
    /// `--userns=keep-id`: the caller's uid and gid are their own numbers in
    /// the container (a user namespace nested in the user's own).
    #[serde(default)]
    pub keep_id: bool,
    /// `--net private`: a network namespace of its own, connected by pasta
    /// (see [`crate::net`]).
    #[serde(default)]
    pub net_private: bool,
    /// Its own network connected by slirp4netns rather than pasta.
    #[serde(default)]
    pub net_slirp: bool,
    /// Its own network reaches the host's loopback through the gateway
    /// (slirp4netns's allow_host_loopback, pasta's --map-gw).
    #[serde(default)]
    pub host_loopback: bool,
    /// `-p [IP:]HOST:CTR[/tcp|udp]` (with a private network).
    #[serde(default)]
    pub publish: Vec<String>,
    /// `--add-host NAME:IP`.
    #[serde(default)]
    pub add_host: Vec<String>,
    /// `--dns IP`.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--restart=no|on-failure[:N]|always|unless-stopped` (see
    /// [`Restart`]).
    #[serde(default)]
    pub restart: Option<String>,
}

/// When the monitor of a detached container starts it again after its
/// command ended (`--restart`, podman's policies). A container stopped or
/// killed by `rcfs stop`/`kill` is not started again by any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    /// After a non-zero exit, at most N times (unbounded without N).
    OnFailure(Option<u32>),
    /// After every exit (`always`; `unless-stopped` is the same here).
    Always,
}

impl Restart {
    pub fn parse(v: Option<&str>) -> Result<Restart> {
        Ok(match v {
            None | Some("no" | "") => Restart::No,
            Some("always" | "unless-stopped") => Restart::Always,
            Some("on-failure") => Restart::OnFailure(None),
            Some(v) => match v.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) => Restart::OnFailure(Some(n)),
                _ => bail!(
                    "invalid --restart {v:?}: give no, on-failure[:MAX], always or unless-stopped"
                ),
            },
        })
    }

    /// Whether a container that ended with `code`, started again
    /// `restarts` times so far, is started again.
    pub fn again(self, code: i32, restarts: u32) -> bool {
        match self {
            Restart::No => false,
            Restart::Always => true,
            Restart::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }
}

/// Runs the container; returns the exit code to exit with.
pub fn run(store: &Store, opts: &RunOptions) -> i32 {
    if opts.detach {
        return crate::detach::run(store, opts);
    }
    match run_inner(store, opts, None, &|_| {}) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rcfs run: {e:#}");
            EXIT_RCFS
        }
    }
}

/// A container's name: letters, digits, `_.-`, not starting with a
/// punctuation mark (as podman takes them).
pub fn check_name(n: &str) -> Result<()> {
    let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && n.len() <= 128;
    if !ok {
        bail!("invalid container name {n:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    Ok(())
}

/// `--restart` is read, and goes with a detached container, not with
/// `--rm` (as podman has it).
pub(crate) fn check_restart(opts: &RunOptions) -> Result<Restart> {
    let r = Restart::parse(opts.restart.as_deref())?;
    if r != Restart::No && opts.rm {
        bail!(
            "--restart and --rm conflict: a container removed when it ends cannot be started again"
        );
    }
    if r != Restart::No && !opts.detach {
        bail!("--restart is held by a detached container's monitor: add -d");
    }
    Ok(r)
}

pub(crate) fn new_id() -> String {
    let seed = format!(
        "{:?}{}{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    Digest::of(seed.as_bytes()).hex()[..12].to_owned()
}

/// `rcfs start -a NAME`: runs the stopped container NAME again, as it was
/// made (the same image, command and options), on its upper dir.
pub fn start(store: &Store, name: &str) -> i32 {
    crate::control::clear_stopped(store, name);
    match start_again(store, name, false, &|_| {}) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rcfs start: {e:#}");
            EXIT_RCFS
        }
    }
}

/// Runs the stopped container `name` again as it was made, attached or
/// `detached` (by its monitor: output to its log); `started` is told its
/// name once the command runs.
pub(crate) fn start_again(
    store: &Store,
    name: &str,
    detached: bool,
    started: &dyn Fn(&str),
) -> Result<i32> {
    let (claimed, rec) = crate::containers::Claimed::existing(store, name, "stop it first")?;
    let mut opts = rec
        .options
        .context("the container's record has no options: made by an older rcfs")?;
    opts.name = Some(name.to_owned());
    opts.rm = false;
    opts.detach = detached;
    if !detached {
        // Attached: no monitor holds the policy.
        opts.restart = None;
    }
    run_inner(store, &opts, Some(claimed), started)
}

/// The stopped container `name`'s options, for `rcfs restart`.
pub(crate) fn options_of(store: &Store, name: &str) -> Result<RunOptions> {
    let (rec, _) = crate::containers::load(store, name)?;
    rec.options
        .context("the container's record has no options: made by an older rcfs")
}

/// The monitor of `rcfs run -d` (see [`crate::detach`]): runs the
/// container with its output to its log; `started` is told its name once
/// the command runs.
pub(crate) fn run_detached(store: &Store, opts: &RunOptions, started: &dyn Fn(&str)) -> i32 {
    match run_inner(store, opts, None, started) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rcfs run: {e:#}");
            EXIT_RCFS
        }
    }
}

/// Runs a container: a new one, or `again` the existing one claimed;
/// `started` is told its name once the command runs.
fn run_inner(
    store: &Store,
    opts: &RunOptions,
    again: Option<crate::containers::Claimed>,
    started: &dyn Fn(&str),
) -> Result<i32> {
    // Bad options, and no usable /dev/fuse, fail before anything is made.
    mount::check_fuse_open()?;
    let root = nix::unistd::geteuid().is_root();
    let mut keep_id_opts;
    let opts = if opts.keep_id {
        if root {
            bail!("--userns=keep-id is for ordinary users, as podman's: root's ids are its own already");
        }
        // The command runs as the caller (its ids, not 0), unless -u says
        // otherwise; kept in the record for start and exec.
        keep_id_opts = opts.clone();
        keep_id_opts
            .user
            .get_or_insert_with(|| format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid()));
        &keep_id_opts
    } else {
        opts
    };
    // Named volumes made, --mounts as -v and --tmpfs: the record keeps
    // what the container binds.
    let resolved = crate::volume::resolve(store, opts)?;
    let opts = &resolved;
    for v in &opts.volumes {
        rcfs_runtime::Bind::parse(v).map_err(anyhow::Error::msg)?;
    }
    for d in &opts.devices {
        rcfs_runtime::Device::parse(d).map_err(anyhow::Error::msg)?;
    }
    capabilities(opts)?;
    for t in &opts.tmpfs {
        tmpfs_of(t)?;
    }
    for u in &opts.ulimit {
        ulimit_of(u)?;
    }
    if let Some(s) = &opts.stop_signal {
        crate::control::parse_signal(s).map_err(anyhow::Error::msg)?;
    }
    check_restart(opts)?;
    if let Some(h) = &opts.hostname {
        // RFC 1123: it goes into /etc/hosts and /etc/hostname.
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            bail!("invalid --hostname {h:?}: letters, digits, '-' and '.', labels of 63 at most");
        }
    }
    for l in &opts.labels {
        if !l.contains('=') {
            bail!("invalid --label {l:?}: give KEY=VALUE");
        }
    }
    let publish = opts
        .publish
        .iter()
        .map(|p| crate::net::Publish::parse(p))
        .collect::<Result<Vec<_>>>()?;
    if !publish.is_empty() && !opts.net_private {
        bail!("-p publishes ports of a container's own network: not with --net host or none");
    }
    for h in &opts.add_host {
        crate::net::parse_add_host(h)?;
    }
    dns_servers(opts)?;
    let seccomp = crate::seccomp::program(store, opts.seccomp.as_deref())?;
    let pull = if again.is_some() {
        None
    } else {
        opts.pull.as_deref()
    };
    if pull == Some("always") {
        crate::image::pull(store, &opts.image, true, opts.insecure, true)?;
    }
    let found = crate::image::find(store, &opts.image)?;
    if found.is_none() && pull == Some("never") {
        bail!(
            "no image {} in the store, and --pull=never: pull it first (rcfs pull)",
            opts.image
        );
    }
    let (claimed, again) = match again {
        Some(c) => (c, true),
        None => {
            let name = match &opts.name {
                Some(n) => n.clone(),
                None => new_id(),
            };
            (
                crate::containers::Claimed::new_container(store, &name)?,
                false,
            )
        }
    };
    let name = claimed.name.clone();
    let dir = claimed.path.clone();
    let mut record = crate::containers::Record {
        name: name.clone(),
        image: found
            .as_ref()
            .map_or_else(|| opts.image.clone(), |i| i.name.clone()),
        image_id: found.as_ref().map(|i| i.manifest.clone()),
        command: opts.args.clone(),
        // Made once: a container started again keeps when it was made.
        created: again
            .then(|| claimed.read().ok().map(|r| r.created))
            .flatten()
            .unwrap_or_else(rcfs_fs::image::pull::now_rfc3339),
        pid: std::process::id(),
        exit_code: None,
        started: Some(rcfs_fs::image::pull::now_rfc3339()),
        finished: None,
        options: Some(opts.clone()),
    };
    if let Err(e) = claimed.write(&record) {
        if !again {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e);
    }
    // A container whose command never started leaves nothing (unless it
    // is one being started again, which keeps what it had).
    let mut cleanup = |code: i32, started: bool| {
        if opts.rm || (!started && !again) {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            record.exit_code = Some(code);
            record.finished = Some(rcfs_fs::image::pull::now_rfc3339());
            if let Err(e) = claimed.write(&record) {
                eprintln!("rcfs run: {e:#}");
            }
        }
        code
    };
    // Still one thread: the namespaces, and the init forked.
    // Real root keeps its user namespace (and with it FUSE passthrough for
    // the daemon); the container gets one of its own. Anyone else's daemon
    // needs one to mount, and the container shares it.
    let entered = if root {
        rcfs_runtime::enter_mount_namespace().map(|_| Some(rcfs_runtime::IdMap::Identity))
    } else {
        rcfs_runtime::enter_user_namespace().map(|m| opts.keep_id.then_some(m))
    };
    // The init's own user namespace: real root's identity-mapped one, or
    // keep-id's, nested in the user's.
    let entered = entered.map_err(anyhow::Error::from).and_then(|m| match m {
        Some(rcfs_runtime::IdMap::Identity) => Ok(Some(rcfs_runtime::IdMap::Identity)),
        Some(m) => {
            let k = m.keep_id().map_err(anyhow::Error::msg)?;
            // The container's `/` is its root's (the upper dir's root gives
            // the union's root its owner): here 1, the id the keep-id
            // namespace calls 0.
            let upper = dir.join("upper");
            std::os::unix::fs::lchown(&upper, Some(1), Some(1)).with_context(|| {
                format!("cannot give {} to the container's root", upper.display())
            })?;
            Ok(Some(k))
        }
        None => Ok(None),
    });
    let mut own_map = None;
    // In the namespace, which decides (as for the init) which terminals
    // can be opened again write-only; the others go through pipes.
    let mut relays = Vec::new();
    let mut output = None;
    let forked = entered
        .and_then(|m| {
            own_map = m;
            if opts.detach {
                output = Some(crate::detach::Output::capture(claimed.dir())?);
            } else if !opts.tty {
                relays = crate::relay::unopenable_terminals()?;
            }
            Ok(())
        })
        .and_then(|_| Container::fork_mapped(own_map, opts.net_private).map_err(Into::into));
    let mut container = match forked {
        Ok(c) => c,
        Err(e) => {
            drop(relays);
            drop(output);
            cleanup(EXIT_RCFS, false);
            return Err(e);
        }
    };
    // The container dies with this process, whatever its pid 1 does; its
    // network (pasta, set up while the union is mounted) is stopped when
    // this function returns.
    let setup = container
        .watch()
        .map_err(|e| anyhow::Error::from(e).context("cannot start the container's watcher"))
        .and_then(|w| {
            let pasta = match opts.net_private {
                true => Some(crate::net::spawn(
                    if opts.net_slirp {
                        crate::net::Backend::Slirp
                    } else {
                        crate::net::Backend::Pasta
                    },
                    container.pid,
                    &publish,
                    opts.host_loopback,
                    crate::net::dns_forward(),
                )?),
                false => None,
            };
            Ok((w, pasta))
        });
    let (_watch, _pasta) = match setup {
        Ok(s) => s,
        Err(e) => {
            container.start_never();
            let _ = container.wait();
            drop(relays);
            drop(output);
            cleanup(EXIT_RCFS, false);
            return Err(e);
        }
    };
    for r in &mut relays {
        if let Err(e) = r.start() {
            eprintln!("rcfs run: {e:#}");
        }
    }
    if let Some(Err(e)) = output.as_mut().map(|o| o.start()) {
        eprintln!("rcfs run: the container's output will not be logged: {e:#}");
    }
    let on_start = || {
        if let Some(o) = &output {
            o.started();
        }
        started(&name);
    };
    let place = Place {
        name: &name,
        dir: &dir,
        fd: claimed.dir(),
        net: _pasta.as_ref(),
        keep_id: match own_map {
            Some(rcfs_runtime::IdMap::KeepId { uid, gid, .. }) => Some((uid, gid)),
            _ => None,
        },
    };
    let (code, started) = match serve(
        store,
        opts,
        found,
        &place,
        &mut container,
        seccomp,
        &on_start,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rcfs run: {e:#}");
            // The init, never started, goes with us; wait for it.
            container.start_never();
            let _ = container.wait();
            (EXIT_RCFS, false)
        }
    };
    // The terminals back, and all the container wrote on them (or its
    // log all it wrote).
    drop(relays);
    drop(output);
    Ok(cleanup(code, started))
}

/// Where a container is: its name and its dir (path and fd).
struct Place<'a> {
    name: &'a str,
    dir: &'a Path,
    fd: std::os::fd::BorrowedFd<'a>,
    /// The pasta connecting its own network, when it has one.
    net: Option<&'a crate::net::Pasta>,
    /// `--userns=keep-id`'s user (uid, gid).
    keep_id: Option<(u32, u32)>,
}

/// In the namespaces: mounts the root, starts the init, waits for it;
/// returns its exit code and whether it got its spec (the command started,
/// or the init failed setting it up).
fn serve(
    store: &Store,
    opts: &RunOptions,
    found: Option<rcfs_fs::image::store::ImageRecord>,
    place: &Place<'_>,
    container: &mut Container,
    seccomp: Option<Vec<u8>>,
    on_start: &dyn Fn(),
) -> Result<(i32, bool)> {
    let (name, dir) = (place.name, place.dir);
    // While the init is an unreaped child: it, whatever becomes of its pid.
    let init = crate::control::pidfd(container.pid).context("pidfd_open of the init")?;
    let rootfs = dir.join("rootfs");
    let mut req = MountRequest::new(
        Vec::new(),
        Some(dir.join("upper")),
        Some(dir.join("work")),
        rootfs.clone(),
    );
    req.image = Some(ImageMount {
        store: store.root.clone(),
        name: found
            .as_ref()
            .map_or_else(|| opts.image.clone(), |i| i.name.clone()),
        cache: CacheOptions {
            learn_start: true,
            ..Default::default()
        },
        pull: found.is_none(),
        tell_pull: false,
        insecure: opts.insecure,
        unverified_streaming: opts.unverified_streaming,
        keep_id: place.keep_id,
    });
    req.fsname = "rcfs-container".into();
    // The command may run as another id of the namespace.
    req.allow_other = true;
    // Device nodes and setuid bits of an image are not the host's to honour
    // (root's daemon mounts in the host's user namespace).
    req.suid = false;
    req.dev = false;
    // A container removed when it ends needs nothing it wrote to survive a
    // crash: its upper dir is volatile (podman's --rm does the same), and
    // its end does not wait for the disk.
    req.fsync = !opts.rm;
    req.foreground = true;
    // Signals for the container are taken by one thread and passed on; the
    // daemon's threads, made next, inherit the mask.
    let mut sigs = SigSet::empty();
    for s in rcfs_runtime::FORWARDED {
        sigs.add(s);
    }
    // Ours: the container's terminal follows our size.
    sigs.add(Signal::SIGWINCH);
    sigs.thread_block().context("blocking signals")?;
    let started = mount::start(&req)?;
    let config = match (&found, &started.live) {
        (Some(img), _) => store.image_blob(img, "config", &img.config)?,
        (None, Some(live)) => live
            .config()
            .context("the pull gave no image config")?
            .to_vec(),
        // Another pull recorded it since it was looked for: the mount
        // serves what the store has now.
        (None, None) => match crate::image::find(store, &opts.image)? {
            Some(img) => store.image_blob(&img, "config", &img.config)?,
            None => bail!("no image {}", opts.image),
        },
    };
    let config: ImageConfiguration =
        serde_json::from_slice(&config).context("the image's config is not an image config")?;
    let live = started.live.clone();
    let session = started.session;
    let unmounter = session.unmounter();
    // Says when the daemon has ended (its union dropped: flushed).
    let (served_tx, served) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("rcfs-serve".into())
        .spawn(move || {
            let r = session.run();
            let _ = served_tx.send(());
            r
        })?;
    // From here on, every way out unmounts (the guards go in reverse order:
    // the terminal restored, the cgroups removed, then the root unmounted).
    let _mounted = RootMounted {
        unmounter,
        served,
        socket: crate::stats::socket_path(&store.root, &rootfs),
    };
    let limits = rcfs_runtime::cgroup::Limits {
        memory: opts.memory,
        cpus: opts.cpus,
        pids: opts.pids_limit,
    };
    // The init, still waiting, goes into the cgroups: all it starts too.
    let _cgroups = if limits.any() {
        Some(rcfs_runtime::cgroup::Cgroups::apply(
            name,
            container.pid.as_raw(),
            &limits,
        )?)
    } else {
        None
    };
    let spec = spec_of(&config, opts, name, &rootfs)
        .and_then(|s| network_files(s, opts, place))
        .map(|s| Spec { seccomp, ..s });
    let pid = container.pid;
    // The init sets the container up while pasta connects its network;
    // the command starts once both are done.
    let result = spec
        .map(|s| Spec {
            wait_go: place.net.is_some(),
            ..s
        })
        .and_then(|spec| container.start(&spec).map_err(Into::into))
        .and_then(|_| match place.net {
            Some(p) => p.ready().and_then(|_| container.go().map_err(Into::into)),
            None => Ok(()),
        });
    let mut terminal = None;
    if result.is_ok() && opts.tty {
        if let Some(master) = container.terminal()? {
            terminal = Some(Terminal::attach(master, opts.interactive)?);
        }
    }
    if result.is_ok() {
        let cgroup_dirs = _cgroups
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default();
        crate::control::serve(place.fd, init, container.pid, cgroup_dirs);
        on_start();
        let master = terminal.as_ref().map(|t| t.master.clone());
        std::thread::Builder::new()
            .name("rcfs-signals".into())
            .spawn(move || loop {
                match sigs.wait() {
                    Ok(Signal::SIGWINCH) => {
                        if let Some(m) = &master {
                            copy_window_size(m);
                        }
                    }
                    Ok(sig) => {
                        let _ = kill(pid, sig);
                    }
                    Err(_) => {}
                }
            })?;
    }
    let started = result.is_ok();
    let code = match result {
        Ok(()) => container.wait()?,
        Err(e) => {
            eprintln!("rcfs run: {e:#}");
            container.start_never();
            // An init that is set up waits for its word to go: it never
            // comes.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = container.wait();
            EXIT_RCFS
        }
    };
    drop(terminal);
    let _ = nix::unistd::unlinkat(
        place.fd,
        crate::control::SOCKET,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    // What the container failed on first may be only a symptom (EIO from
    // its root): a pull that failed is the cause.
    if let Some(why) = live.as_ref().and_then(|l| l.failure()) {
        eprintln!("rcfs run: the image could not be pulled: {why}");
    }
    Ok((code, started))
}

/// The container's root while it is mounted: unmounted when dropped, on
/// every way out of [`serve`].
struct RootMounted {
    unmounter: rcfs_fs::Unmounter,
    /// Says when the daemon has ended.
    served: std::sync::mpsc::Receiver<()>,
    /// The mount's stats socket, which goes with it.
    socket: PathBuf,
}

impl Drop for RootMounted {
    fn drop(&mut self) {
        if let Err(e) = self.unmounter.unmount() {
            log::warn!("unmounting the container's root: {e}");
        }
        // The daemon ends with its mount; do not wait long for a stuck one.
        let _ = self.served.recv_timeout(Duration::from_secs(5));
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        assert!(check_name("web-1").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
    }
}
