//! `rcfs-overlay`: rcfs behind fuse-overlayfs's command line, for podman,
//! buildah and `mount -t fuse.rcfs-overlay`.

use std::process::ExitCode;

use anyhow::Result;
use rcfs::overlay_args::{parse, Parsed};

const HELP: &str =
    "usage: rcfs-overlay [-f] [-d] -o lowerdir=A:B[,upperdir=U,workdir=W][,OPTIONS] MOUNTPOINT
       rcfs-overlay SOURCE MOUNTPOINT -o OPTIONS   (as called by mount -t fuse.rcfs-overlay)

A drop-in for fuse-overlayfs. Lower dirs are listed top first.
  -f                 serve in the foreground (default: return once mounted)
  -d                 log every FUSE operation (implies -f)
  -o allow_other     let other users in
  -o timeout=SECS    how long the kernel may cache entries and attributes
  -o metacopy=on     chmod/chown/xattr changes copy no data (off by default here)
  -o passthrough=off never use FUSE passthrough
  -o suid|nosuid     (root) honour setuid bits or not (default: suid, as fuse-overlayfs)
  -o dev|nodev       (root) honour device nodes or not (default: nodev, as fuse-overlayfs)
Unknown options are ignored with a warning. Unmount with umount or fusermount3 -u.";

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args)? {
        Parsed::Help => println!("{HELP}"),
        Parsed::Version => println!("rcfs-overlay {}", env!("CARGO_PKG_VERSION")),
        Parsed::Mount(req, warnings) => {
            let level = if req.debug {
                "warn,rcfs=debug,rcfs_fs=debug"
            } else {
                "warn,rcfs=info,rcfs_fs=info"
            };
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
                .init();
            for w in warnings {
                eprintln!("{w}");
            }
            rcfs::mount::run(*req)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcfs-overlay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
