//! `rcfs stats MOUNTPOINT`: what an image mount's block cache has done.
//!
//! The server of an image mount listens on a unix socket in the store
//! (`run/HEX.sock`, named by the mountpoint's path) and answers each
//! connection with its counters. `run/` is a 0700 dir of the store's user
//! (in the store's 0700 root), so no one else can put a socket there;
//! `rcfs stats` also takes answers only from a server of its own uid, and
//! prints no control characters of them.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rcfs_fs::cache::BlockCache;
use rcfs_fs::image::digest::Digest;

/// The socket of the mount on `mountpoint` (canonical).
pub fn socket_path(store: &Path, mountpoint: &Path) -> PathBuf {
    let d = Digest::of(mountpoint.as_os_str().as_encoded_bytes());
    store.join("run").join(format!("{}.sock", &d.hex()[..16]))
}

/// Starts answering stats requests for this mount (for the life of the
/// process). Failing to listen costs only the stats.
/// `more` adds lines (the pull of an image pulled while mounted).
pub fn serve(
    store: &Path,
    mountpoint: &Path,
    image: &str,
    cache: Arc<BlockCache>,
    more: Option<Box<dyn Fn() -> String + Send>>,
) {
    let path = socket_path(store, mountpoint);
    let listen = || -> std::io::Result<UnixListener> {
        // The store's `run/` is made (or closed to others) by the mount
        // that serves this, before it is mounted.
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(&path)
    };
    let listener = match listen() {
        Ok(l) => l,
        Err(e) => {
            log::warn!(
                "no stats for this mount: cannot listen on {}: {e}",
                path.display()
            );
            return;
        }
    };
    let head = format!("image {image}\nmountpoint {}\n", mountpoint.display());
    let _ = std::thread::Builder::new()
        .name("rcfs-stats".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let (mem, disk) = cache.usage();
                let text = format!(
                    "{head}{}cache_memory_bytes {mem}\ncache_disk_bytes {disk}\n{}",
                    cache.stats.render(),
                    more.as_ref().map(|f| f()).unwrap_or_default()
                );
                let _ = c.write_all(text.as_bytes());
            }
        });
}

/// Prints the stats of the image mount on `mountpoint`.
pub fn show(store: &Path, mountpoint: &Path) -> Result<()> {
    let mp = mountpoint
        .canonicalize()
        .with_context(|| format!("{}", mountpoint.display()))?;
    let path = socket_path(store, &mp);
    let mut c = UnixStream::connect(&path).with_context(|| {
        format!(
            "no rcfs image mount on {} with its store at {} (stats are kept by image mounts; give --root if the store is elsewhere)",
            mp.display(),
            store.display()
        )
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let peer = nix::sys::socket::getsockopt(&c, nix::sys::socket::sockopt::PeerCredentials)
        .context("cannot tell who answers on the stats socket")?;
    if peer.uid() != me {
        bail!(
            "{} is served by uid {}, not by you (uid {me}): not an rcfs mount of yours",
            path.display(),
            peer.uid()
        );
    }
    let mut bytes = Vec::new();
    (&mut c).take(1 << 20).read_to_end(&mut bytes)?;
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|ch| {
            if ch.is_control() && ch != '\n' {
                '?'
            } else {
                ch
            }
        })
        .collect();
    print!("{text}");
    Ok(())
}
