//! `rcfs`: pull images into a store and mount them lazily, or mount layer
//! dirs, as a union filesystem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use rcfs::deferred::Deferred;
use rcfs::image;
use rcfs::mount::{self, split_lowers, ImageMount, MountRequest};
use rcfs_fs::image::open::CacheOptions;

#[derive(Parser, Debug)]
#[command(
    name = "rcfs",
    version,
    about = "Userspace union filesystem for rootless containers"
)]
struct Cli {
    /// The image store (default: $XDG_DATA_HOME/rcfs, ~/.local/share/rcfs,
    /// or /var/lib/rcfs for root).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum VolumeCmd {
    /// Make a volume (named, or a new id); prints its name.
    Create { name: Option<String> },
    /// List the volumes.
    Ls {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove volumes no container uses.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount an image (fetched lazily) or read-only layer dirs, optionally
    /// with a writable upper dir.
    Mount(Deferred<MountArgs>),
    /// Serve the store's layers to podman and CRI-O as their Additional
    /// Layer Store (storage.conf: additionallayerstores = ["MOUNTPOINT:ref"]),
    /// in the foreground until unmounted or stopped.
    Als(AlsArgs),
    /// Run a command in a new container of an image, rootless: its root is
    /// the image's union (pulled while it runs if the store lacks it).
    Run(Deferred<Box<RunArgs>>),
    /// List containers (running ones; -a: all).
    Ps {
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run a stopped container again, attached, on its upper dir.
    Start {
        /// Attach (the only way today: rcfs start runs in the foreground).
        #[arg(short = 'a', long, required = true)]
        attach: bool,
        name: String,
    },
    /// Make an image of a stopped container: its changes become a new
    /// zstd:chunked layer on top of its image's layers.
    Commit {
        /// The history entry's comment.
        #[arg(short = 'm', long)]
        message: Option<String>,
        #[arg(long)]
        author: Option<String>,
        /// The container.
        name: String,
        /// The new image's name (pushable with `rcfs push`).
        image: String,
    },
    /// Hold the user namespace that an ordinary user's containers join
    /// (started by `rcfs run`; see rcfs_runtime::keeper).
    #[command(name = "userns-keeper", hide = true)]
    UsernsKeeper { dir: PathBuf },
    /// Print a detached container's output (its stdout to stdout, its
    /// stderr to stderr).
    Logs {
        /// Then follow it until the container stops.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Each line with the time it was written.
        #[arg(short = 't', long)]
        timestamps: bool,
        name: String,
    },
    /// Run a command in a running container (its namespaces, cgroups,
    /// environment, user and seccomp filter).
    Exec {
        /// Keep stdin open (otherwise the command reads /dev/null).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Give the command a terminal.
        #[arg(short = 't', long)]
        tty: bool,
        /// Run as UID[:GID] or USER[:GROUP] of the image (default: the
        /// container's user).
        #[arg(short = 'u', long = "user")]
        user: Option<String>,
        /// Set an environment variable (KEY=VALUE, or KEY for the caller's).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory (default: the container's).
        #[arg(short = 'w', long = "workdir", value_name = "DIR")]
        workdir: Option<String>,
        /// The container.
        name: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Send a signal to running containers' pid 1.
    Kill {
        /// The signal: a name (TERM, SIGTERM) or a number.
        #[arg(short = 's', long, default_value = "KILL", value_parser = rcfs::control::parse_signal)]
        signal: nix::sys::signal::Signal,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop running containers: SIGTERM, then SIGKILL after a timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value = "10", value_name = "SECS")]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop running containers (as rcfs stop) and start them again,
    /// detached.
    Restart {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value = "10", value_name = "SECS")]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Wait for containers to stop; print their exit codes.
    Wait {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove stopped containers and their upper dirs.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Named volumes: dirs of the store that containers bind
    /// (-v NAME:/PATH, --mount type=volume).
    Volume {
        #[command(subcommand)]
        cmd: VolumeCmd,
    },
    /// Pull an image into the store: REGISTRY/REPO[:TAG|@DIGEST], a short
    /// name (registries.conf), oci:DIR[:TAG] or docker-archive:FILE.
    Pull {
        image: String,
        /// Fetch only tables of contents where layers allow it (zstd:chunked):
        /// file data comes when it is first read (the default).
        #[arg(long, conflicts_with = "full")]
        lazy: bool,
        /// Fetch and index every layer whole now.
        #[arg(long)]
        full: bool,
        /// Use plain HTTP (and no TLS checks): for registries on loopback.
        #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// No progress, only errors.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// List the images in the store.
    Images {
        #[arg(long)]
        json: bool,
    },
    /// Remove images from the store's index (`rcfs gc` frees their data).
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Free what no image in the store uses.
    Gc {
        /// Also empty the cache of lazily fetched chunks.
        #[arg(long)]
        all: bool,
    },
    /// Show a container's state and settings, or an image's manifest
    /// digest, layers and config, as JSON.
    Inspect {
        /// A container's name, or an image.
        image: String,
    },
    /// Write an image from the store as a new image whose layers are
    /// zstd:chunked (lazy for rcfs, a plain tar+zstd for other tools).
    Convert {
        /// The image to convert (pulled lazily if not in the store).
        source: String,
        /// The new image's name (REGISTRY/REPO:TAG, as `rcfs push` will use it).
        dest: String,
        /// Put the files this trace lists (`rcfs mount --record-trace`)
        /// first in their layers, in that order.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// zstd compression level.
        #[arg(long, default_value = "3")]
        level: i32,
        /// For a source not yet pulled: plain HTTP to its registry.
        #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
        tls_verify: bool,
    },
    /// Send an image from the store to a registry.
    Push {
        image: String,
        /// REGISTRY/REPO[:TAG] (default: the image's own name).
        dest: Option<String>,
        /// Use plain HTTP (and no TLS checks): for registries on loopback.
        #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
        tls_verify: bool,
    },
    /// Show an image mount's cache counters: hits, misses, bytes fetched,
    /// requests, fetch latency.
    Stats { mountpoint: PathBuf },
    /// Unmount a union mounted with `rcfs mount`; its server then exits.
    Umount {
        /// Where it is mounted.
        mountpoint: PathBuf,
    },
}

/// `--stop-signal`'s value, checked.
/// A size in bytes: a number, with b, k, m or g (1024-based).
fn parse_size(v: &str) -> Result<u64, String> {
    let l = v.trim().to_ascii_lowercase();
    let (num, shift) = match l.chars().last() {
        Some('b') => (&l[..l.len() - 1], 0),
        Some('k') => (&l[..l.len() - 1], 10),
        Some('m') => (&l[..l.len() - 1], 20),
        Some('g') => (&l[..l.len() - 1], 30),
        _ => (&l[..], 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid size {v:?}: give bytes, or a number with k, m or g"))
}

/// `--net`: private, slirp4netns, pasta, host or none; podman's option to
/// reach the host's loopback after the backend's name.
fn parse_net(v: &str) -> Result<String, String> {
    match v {
        "private"
        | "slirp4netns"
        | "pasta"
        | "host"
        | "none"
        | "private:allow_host_loopback=true"
        | "slirp4netns:allow_host_loopback=true"
        | "pasta:--map-gw" => Ok(v.to_owned()),
        _ => Err(format!(
            "rcfs does not support --net {v:?}: give private (slirp4netns), pasta, host or none; \
             slirp4netns:allow_host_loopback=true or pasta:--map-gw to reach the host's loopback"
        )),
    }
}

fn parse_signal_name(v: &str) -> Result<String, String> {
    rcfs::control::parse_signal(v).map(|_| v.to_owned())
}

/// `--entrypoint`: a JSON array of strings, or one command; "" for none.
fn entrypoint_of(v: &str) -> Result<Vec<String>> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    if v.trim_start().starts_with('[') {
        return serde_json::from_str(v).map_err(|e| {
            anyhow::anyhow!("--entrypoint {v:?} is not a JSON array of strings: {e}")
        });
    }
    Ok(vec![v.to_owned()])
}

/// `--env-file` FILE's variables, in order (at most 1 MiB of it).
fn env_file(path: &std::path::Path) -> Result<Vec<String>> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| anyhow::anyhow!("--env-file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// `--security-opt`'s value: the profile of `seccomp=PROFILE|unconfined`
/// (the only option rcfs has).
fn parse_security_opt(v: &str) -> Result<String, String> {
    match v.split_once(['=', ':']) {
        Some(("seccomp", p)) if !p.is_empty() => Ok(p.to_owned()),
        _ => Err(format!(
            "unsupported security option {v:?}: rcfs knows seccomp=PROFILE.json and \
             seccomp=unconfined"
        )),
    }
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// The container's name (default: a random id).
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY for the caller's).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Bind a host path (HOST:CONTAINER[:ro]) or a named volume, made on
    /// first use (VOLUME:CONTAINER[:ro]), into the container.
    #[arg(short = 'v', long = "volume", value_name = "HOST|VOLUME:CTR[:ro]")]
    volume: Vec<String>,
    /// Mount into the container: type=bind,source=/HOST,target=/PATH;
    /// type=volume[,source=NAME],target=/PATH; type=tmpfs,target=/PATH
    /// [,tmpfs-size=N][,tmpfs-mode=M]; each with [,readonly].
    #[arg(long = "mount", value_name = "type=TYPE,...")]
    mount: Vec<String>,
    /// Give the container a host device: HOST[:CONTAINER][:rwm].
    #[arg(long = "device", value_name = "HOST[:CTR][:PERMS]")]
    device: Vec<String>,
    /// The size of /dev/shm (bytes, or with k, m or g; 64m without).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    shm_size: Option<u64>,
    /// Working directory in the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Run as UID[:GID] or USER[:GROUP] of the image.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Keep stdin open (otherwise the command reads /dev/null).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a terminal (a pty that follows this one's size).
    #[arg(short = 't', long)]
    tty: bool,
    /// Memory limit (bytes, or with k, m, g): over it, the container's
    /// processes are killed.
    #[arg(long, value_parser = rcfs_runtime::cgroup::parse_memory)]
    memory: Option<u64>,
    /// CPUs' worth of time the container may use (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Most processes (and threads) the container may have.
    #[arg(long)]
    pids_limit: Option<u64>,
    /// private (the default; also "slirp4netns"): a network of its own,
    /// connected to the host's by slirp4netns; pasta: the same by pasta
    /// (Debian's passt); host: the host's network; none: only a loopback.
    /// slirp4netns:allow_host_loopback=true and pasta:--map-gw let the
    /// container reach the host's loopback (host.containers.internal).
    #[arg(long, visible_alias = "network", default_value = "private", value_parser = parse_net)]
    net: String,
    /// Publish a port of the container's own network (not with --net host
    /// or none):
    /// [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp].
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    publish: Vec<String>,
    /// An /etc/hosts entry NAME:IP.
    #[arg(long, value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// A DNS server for the container's /etc/resolv.conf.
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// Use plain HTTP (and no TLS checks) when the image must be pulled.
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// Image pulled while running: serve a streamed (tar) layer's files as
    /// they arrive, before the layer's digest is checked. Faster first
    /// reads, but a tampered layer's files reach the command.
    #[arg(long)]
    unverified_streaming: bool,
    /// seccomp=PROFILE.json: the command's seccomp profile (podman's JSON
    /// format); seccomp=unconfined: none. Default: podman's
    /// /usr/share/containers/seccomp.json, or rcfs's own when the host
    /// lacks it.
    #[arg(long = "security-opt", value_name = "seccomp=PROFILE|unconfined", value_parser = parse_security_opt)]
    security_opt: Vec<String>,
    /// Replace the image's entrypoint (a command, or a JSON array); "" clears
    /// it. The image's Cmd is dropped with it, as podman does.
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Read environment variables from FILE (KEY=VALUE lines; KEY alone for
    /// the caller's value; # comments); -e values come after.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Start a detached container again when its command ends: no (the
    /// default), on-failure[:MAX] (after a non-zero exit), always,
    /// unless-stopped. Never after rcfs stop or kill.
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// The signal `rcfs stop` sends first (default: the image's StopSignal,
    /// else SIGTERM).
    #[arg(long, value_name = "SIG", value_parser = parse_signal_name)]
    stop_signal: Option<String>,
    /// Add a capability to podman's default set (NET_ADMIN, ALL, ...).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability of the default set (ALL for every one).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Add a supplementary group (a gid, or a group of the image).
    #[arg(long, value_name = "GROUP")]
    group_add: Vec<String>,
    /// The root read-only, with tmpfs on /tmp, /run and /var/tmp.
    #[arg(long)]
    read_only: bool,
    /// Mount a tmpfs at PATH (options: size, mode, uid, gid, nr_inodes,
    /// noexec).
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// A resource limit of the command: NAME=SOFT[:HARD] (nofile, nproc, core, ...).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// missing: pull when the store lacks the image (default); always: pull
    /// (lazily) first; never: fail when the store lacks it.
    #[arg(long, default_value = "missing", value_parser = ["always", "missing", "never"])]
    pull: String,
    /// keep-id: your uid and gid are the same numbers inside the container
    /// (the command runs as you unless -u), with the rest of your subuid
    /// range around them (ordinary users with /etc/subuid ranges).
    #[arg(long, value_name = "MODE", value_parser = ["keep-id"])]
    userns: Option<String>,
    /// A label KEY=VALUE of the container (rcfs ps --json shows them).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Detach: run the container in the background, print its name once
    /// its command has started (read its output with `rcfs logs`).
    #[arg(short = 'd', long)]
    detach: bool,
    /// Run a small init as pid 1 that reaps zombies and passes signals on
    /// to the command (its child). Default: the command is pid 1 itself,
    /// as in podman (a signal it has no handler for does nothing to it).
    #[arg(long)]
    init: bool,
    /// The image.
    image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct MountArgs {
    /// Read-only layer dirs, top first, separated by ':' (instead of an
    /// image, or on top of it).
    #[arg(long, value_name = "DIR[:DIR...]")]
    lower: Option<String>,
    /// Writable dir that receives all changes (needs --work).
    #[arg(long, value_name = "DIR", requires = "work")]
    upper: Option<PathBuf>,
    /// Scratch dir on the upper dir's filesystem, for atomic copy-up.
    #[arg(long, value_name = "DIR", requires = "upper")]
    work: Option<PathBuf>,
    /// [IMAGE] MOUNTPOINT: an image from the store (pulled lazily if it is
    /// not there yet) and where to mount it; or just where to mount --lower.
    #[arg(num_args = 1..=2, value_name = "[IMAGE] MOUNTPOINT", required = true)]
    targets: Vec<String>,
    /// Fetch the image's layers whole in the background while mounted.
    #[arg(long)]
    prefetch: bool,
    /// Write the paths of the image's files, in the order they are first
    /// opened, to FILE (for `rcfs convert --trace`).
    #[arg(long, value_name = "FILE")]
    record_trace: Option<PathBuf>,
    /// Bytes of fetched chunks kept in memory (MiB).
    #[arg(long, default_value = "16", value_name = "MIB")]
    cache_memory: u64,
    /// Bytes of fetched chunks kept on disk in the store (MiB).
    #[arg(long, default_value = "10240", value_name = "MIB")]
    cache_disk: u64,
    /// For an image not yet pulled: use plain HTTP to its registry.
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// For an image not yet pulled: serve a streamed (tar) layer's files as
    /// they arrive, before the layer's digest is checked. Faster first
    /// reads, but a tampered layer's files are served.
    #[arg(long)]
    unverified_streaming: bool,
    /// Serve from this process until unmounted (default: return once mounted).
    #[arg(long, short = 'f')]
    foreground: bool,
    /// Log every FUSE operation with its result and latency (implies --foreground).
    #[arg(long, short = 'd')]
    debug: bool,
    /// Let other users (and other uids of a container) in.
    #[arg(long)]
    allow_other: bool,
    /// Honour setuid/setgid bits and file capabilities (root only). Default:
    /// off for an image (nosuid: what an image holds does not act on the
    /// host), on for layer dirs mounted by root.
    #[arg(long)]
    suid: bool,
    /// Honour device nodes (root only). Default: off for an image (nodev),
    /// on for layer dirs mounted by root.
    #[arg(long)]
    dev: bool,
    /// Copy data up even for metadata-only changes (chmod, chown, xattrs).
    #[arg(long)]
    no_metacopy: bool,
    /// Do not flush copied-up data to disk before it becomes visible (faster
    /// copy-up; after a crash a copied-up file may lack its data). For
    /// throwaway upper dirs, like overlayfs's `volatile`.
    #[arg(long)]
    volatile: bool,
    /// Never use FUSE passthrough.
    #[arg(long)]
    no_passthrough: bool,
    /// Seconds the kernel may cache entries and attributes.
    #[arg(long, default_value = "86400", value_parser = mount::parse_timeout)]
    timeout: Duration,
    /// Append the background server's log here (warnings and errors; every
    /// operation with --debug --log FILE).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Request-serving threads, 1 to 64 (default: one per CPU, 2 to 8).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args, Debug)]
struct AlsArgs {
    /// Where to mount the store (absolute, without ':' or ',').
    mountpoint: PathBuf,
    /// Use plain HTTP (and unchecked TLS) for every registry.
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// Bytes of fetched chunks kept in memory (MiB).
    #[arg(long, default_value = "64", value_name = "MIB")]
    cache_memory: u64,
    /// Bytes of fetched chunks kept on disk in the store (MiB).
    #[arg(long, default_value = "10240", value_name = "MIB")]
    cache_disk: u64,
    /// Log every FUSE operation with its result and latency.
    #[arg(long, short = 'd')]
    debug: bool,
    /// Let other users in. Not needed for podman (its overlay reads the
    /// store as whoever mounted it), and it lets any local user fetch and
    /// read images with your registry credentials.
    #[arg(long)]
    allow_other: bool,
    /// Request-serving threads, 1 to 64.
    #[arg(long, default_value = "4")]
    threads: usize,
}

fn run() -> Result<()> {
    // A command line that cannot be read is rcfs's failure, 125 as in
    // podman: never a code a container's command could have given.
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 125 } else { 0 })
    });
    match cli.cmd {
        Cmd::Als(a) => {
            init_log(a.debug);
            if a.threads == 0 || a.threads > 64 {
                anyhow::bail!(
                    "{} request-serving threads asked for: give 1 to 64",
                    a.threads
                );
            }
            rcfs::als::serve(&rcfs::als::AlsRequest {
                mountpoint: a.mountpoint,
                root: cli.root.clone(),
                insecure: !a.tls_verify,
                cache_memory: a.cache_memory,
                cache_disk: a.cache_disk,
                debug: a.debug,
                allow_other: a.allow_other,
                threads: a.threads,
            })
        }
        Cmd::Mount(Deferred(a)) => {
            init_log(a.debug);
            let (image, mountpoint) = match &a.targets[..] {
                [mp] => (None, PathBuf::from(mp)),
                [img, mp] => (Some(img.clone()), PathBuf::from(mp)),
                _ => unreachable!("clap checks 1 or 2"),
            };
            if image.is_none() && a.lower.is_none() {
                anyhow::bail!("nothing to mount: give an image (rcfs mount IMAGE MOUNTPOINT) or layer dirs (--lower A:B)");
            }
            let lowers = a.lower.as_deref().map(split_lowers).unwrap_or_default();
            let mut req = MountRequest::new(lowers, a.upper, a.work, mountpoint);
            if let Some(name) = image {
                req.image = Some(ImageMount {
                    store: image::store_root(cli.root.as_deref()),
                    pull: true,
                    tell_pull: true,
                    insecure: !a.tls_verify,
                    unverified_streaming: a.unverified_streaming,
                    keep_id: None,
                    name,
                    cache: CacheOptions {
                        mem_bytes: a.cache_memory << 20,
                        disk_bytes: a.cache_disk << 20,
                        prefetch: a.prefetch,
                        learn_start: true,
                        trace: match &a.record_trace {
                            Some(p) => Some(rcfs_fs::layer::Trace::create(p).map_err(|e| {
                                anyhow::anyhow!("cannot write the trace {}: {e}", p.display())
                            })?),
                            None => None,
                        },
                    },
                });
                req.fsname = "rcfs-image".into();
            }
            // --debug serves in the foreground unless its log goes to a file.
            req.foreground = a.foreground || (a.debug && a.log.is_none());
            req.log = a.log;
            req.debug = a.debug;
            req.allow_other = a.allow_other;
            if (a.suid || a.dev) && !nix::unistd::geteuid().is_root() {
                anyhow::bail!(
                    "--suid and --dev are for root only: a user's FUSE mount is always nosuid,nodev"
                );
            }
            // An image's setuid files and device nodes are not the host's to
            // honour unless asked: root's mount with --allow-other would hand
            // them to every user.
            if req.image.is_some() {
                req.suid = a.suid;
                req.dev = a.dev;
            } else {
                req.suid |= a.suid;
                req.dev |= a.dev;
            }
            req.metacopy = !a.no_metacopy;
            req.passthrough = !a.no_passthrough;
            req.fsync = !a.volatile;
            req.ttl = a.timeout;
            if let Some(t) = a.threads {
                req.threads = t;
            }
            mount::run(req)
        }
        Cmd::Run(Deferred(a)) => {
            // The container's output is the user's: only warnings here.
            warnings_only();
            let store = image::open_store(cli.root.as_deref())?;
            // Options that cannot be read are rcfs's failure: 125.
            let given = || -> Result<(Vec<String>, Option<Vec<String>>)> {
                let mut env = Vec::new();
                for f in &a.env_file {
                    env.extend(env_file(f)?);
                }
                env.extend(a.env.iter().cloned());
                Ok((env, a.entrypoint.as_deref().map(entrypoint_of).transpose()?))
            };
            let (env, entrypoint) = given().unwrap_or_else(|e| {
                eprintln!("rcfs run: {e:#}");
                std::process::exit(rcfs_runtime::EXIT_RCFS)
            });
            let code = rcfs::run::run(
                &store,
                &rcfs::run::RunOptions {
                    image: a.image,
                    args: a.command,
                    name: a.name,
                    rm: a.rm,
                    env,
                    workdir: a.workdir,
                    user: a.user,
                    hostname: a.hostname,
                    interactive: a.interactive,
                    tty: a.tty,
                    net_none: a.net == "none",
                    host_loopback: a.net.ends_with(":allow_host_loopback=true")
                        || a.net.ends_with(":--map-gw"),
                    insecure: !a.tls_verify,
                    unverified_streaming: a.unverified_streaming,
                    volumes: a.volume,
                    mounts: a.mount,
                    devices: a.device,
                    shm_size: a.shm_size,
                    memory: a.memory,
                    cpus: a.cpus,
                    pids_limit: a.pids_limit,
                    // The last seccomp= given wins, as podman takes it.
                    seccomp: a.security_opt.last().cloned(),
                    init: a.init,
                    detach: a.detach,
                    entrypoint,
                    pull: Some(a.pull),
                    keep_id: a.userns.as_deref() == Some("keep-id"),
                    net_private: !matches!(a.net.as_str(), "host" | "none"),
                    net_slirp: !a.net.starts_with("pasta"),
                    publish: a.publish,
                    add_host: a.add_host,
                    dns: a.dns,
                    stop_signal: a.stop_signal,
                    restart: a.restart,
                    cap_add: a.cap_add,
                    cap_drop: a.cap_drop,
                    group_add: a.group_add,
                    read_only: a.read_only,
                    tmpfs: a.tmpfs,
                    ulimit: a.ulimit,
                    labels: a.label,
                },
            );
            std::process::exit(code);
        }
        Cmd::Ps { all, json } => {
            rcfs::containers::ps(&image::open_store(cli.root.as_deref())?, all, json)
        }
        Cmd::Start { attach: _, name } => {
            warnings_only();
            let store = image::open_store(cli.root.as_deref())?;
            std::process::exit(rcfs::run::start(&store, &name));
        }
        Cmd::Commit {
            message,
            author,
            name,
            image: dest,
        } => rcfs::containers::commit(
            &image::open_store(cli.root.as_deref())?,
            &name,
            &dest,
            message,
            author,
        ),
        Cmd::UsernsKeeper { dir } => {
            std::process::exit(rcfs_runtime::keeper::keep(dir.as_os_str()))
        }
        Cmd::Logs {
            follow,
            tail,
            timestamps,
            name,
        } => rcfs::detach::logs(
            &image::open_store(cli.root.as_deref())?,
            &name,
            &rcfs::detach::LogsOptions {
                follow,
                tail,
                timestamps,
            },
        ),
        Cmd::Exec {
            interactive,
            tty,
            user,
            env,
            workdir,
            name,
            command,
        } => {
            warnings_only();
            let store = image::open_store(cli.root.as_deref())?;
            std::process::exit(rcfs::exec::exec(
                &store,
                &name,
                &rcfs::exec::ExecOptions {
                    interactive,
                    tty,
                    user,
                    env,
                    workdir,
                    args: command,
                },
            ));
        }
        Cmd::Kill { signal, names } => {
            rcfs::control::kill(&image::open_store(cli.root.as_deref())?, &names, signal)
        }
        Cmd::Stop { time, names } => rcfs::control::stop(
            &image::open_store(cli.root.as_deref())?,
            &names,
            Duration::from_secs(time),
        ),
        Cmd::Restart { time, names } => {
            warnings_only();
            rcfs::detach::restart(
                &image::open_store(cli.root.as_deref())?,
                &names,
                Duration::from_secs(time),
            )
        }
        Cmd::Wait { names } => {
            rcfs::control::wait(&image::open_store(cli.root.as_deref())?, &names)
        }
        Cmd::Rm { names } => rcfs::containers::rm(&image::open_store(cli.root.as_deref())?, &names),
        Cmd::Volume { cmd } => {
            let store = image::open_store(cli.root.as_deref())?;
            match cmd {
                VolumeCmd::Create { name } => rcfs::volume::create(&store, name.as_deref()),
                VolumeCmd::Ls { quiet } => rcfs::volume::ls(&store, quiet),
                VolumeCmd::Rm { names } => rcfs::volume::rm(&store, &names),
            }
        }
        Cmd::Umount { mountpoint } => mount::umount(&mountpoint),
        Cmd::Pull {
            image: name,
            lazy: _,
            full,
            tls_verify,
            quiet,
        } => {
            init_log(false);
            let store = image::open_store(cli.root.as_deref())?;
            image::pull(&store, &name, !full, !tls_verify, quiet).map(|_| ())
        }
        Cmd::Images { json } => image::images(&image::open_store(cli.root.as_deref())?, json),
        Cmd::Rmi { images } => image::rmi(&image::open_store(cli.root.as_deref())?, &images),
        Cmd::Gc { all } => image::gc(&image::open_store(cli.root.as_deref())?, all),
        Cmd::Inspect { image: name } => {
            let store = image::open_store(cli.root.as_deref())?;
            let container = rcfs::run::check_name(&name).is_ok()
                && store.root.join("containers").join(&name).is_dir();
            if container {
                rcfs::containers::inspect(&store, &name)
            } else {
                image::inspect(&store, &name)
            }
        }
        Cmd::Convert {
            source,
            dest,
            trace,
            level,
            tls_verify,
        } => {
            init_log(false);
            let store = image::open_store(cli.root.as_deref())?;
            image::convert(&store, &source, &dest, trace.as_deref(), level, !tls_verify)
        }
        Cmd::Push {
            image: name,
            dest,
            tls_verify,
        } => {
            init_log(false);
            let store = image::open_store(cli.root.as_deref())?;
            image::push(&store, &name, dest.as_deref(), !tls_verify)
        }
        Cmd::Stats { mountpoint } => {
            let root = cli
                .root
                .clone()
                .unwrap_or_else(rcfs_fs::image::store::Store::default_root);
            rcfs::stats::show(&root, &mountpoint)
        }
    }
}

/// The log of a command whose output is the user's (a container's):
/// warnings only. fuser's "Failed to send FUSE reply: No such file or
/// directory" is left out: it says that a request's process went (killed
/// with its container) before its answer, which is no one's problem.
fn warnings_only() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,fuser::reply=off"),
    )
    .init();
}

fn init_log(debug: bool) {
    let level = if debug {
        "warn,rcfs=debug,rcfs_fs=debug"
    } else {
        "warn,rcfs=info,rcfs_fs=info,fuser::reply=off"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_micros()
        .init();
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
