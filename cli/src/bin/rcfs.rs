//! `rcfs`: mount image layers as a union filesystem (and, as the project
//! grows, pull and run containers on it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use rcfs::mount::{self, split_lowers, MountRequest};

#[derive(Parser, Debug)]
#[command(
    name = "rcfs",
    version,
    about = "Userspace union filesystem for rootless containers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount read-only layers, optionally with a writable upper dir.
    Mount(MountArgs),
    /// Unmount a union mounted with `rcfs mount`; its server then exits.
    Umount {
        /// Where it is mounted.
        mountpoint: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct MountArgs {
    /// Read-only layer dirs, top first, separated by ':'.
    #[arg(long, value_name = "DIR[:DIR...]")]
    lower: String,
    /// Writable dir that receives all changes (needs --work).
    #[arg(long, value_name = "DIR", requires = "work")]
    upper: Option<PathBuf>,
    /// Scratch dir on the upper dir's filesystem, for atomic copy-up.
    #[arg(long, value_name = "DIR", requires = "upper")]
    work: Option<PathBuf>,
    /// Where to mount.
    mountpoint: PathBuf,
    /// Serve from this process until unmounted (default: return once mounted).
    #[arg(long, short = 'f')]
    foreground: bool,
    /// Log every FUSE operation with its result and latency (implies --foreground).
    #[arg(long, short = 'd')]
    debug: bool,
    /// Let other users (and other uids of a container) in.
    #[arg(long)]
    allow_other: bool,
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

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Mount(a) => {
            let mut req = MountRequest::new(split_lowers(&a.lower), a.upper, a.work, a.mountpoint);
            // --debug serves in the foreground unless its log goes to a file.
            req.foreground = a.foreground || (a.debug && a.log.is_none());
            req.log = a.log;
            req.debug = a.debug;
            req.allow_other = a.allow_other;
            req.metacopy = !a.no_metacopy;
            req.passthrough = !a.no_passthrough;
            req.fsync = !a.volatile;
            req.ttl = a.timeout;
            if let Some(t) = a.threads {
                req.threads = t;
            }
            init_log(req.debug);
            mount::run(req)
        }
        Cmd::Umount { mountpoint } => mount::umount(&mountpoint),
    }
}

fn init_log(debug: bool) {
    let level = if debug {
        "warn,rcfs=debug,rcfs_fs=debug"
    } else {
        "warn,rcfs=info,rcfs_fs=info"
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
