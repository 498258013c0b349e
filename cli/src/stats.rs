//! `rcfs stats MOUNTPOINT`: what an image mount's block cache has done.
//!
//! The server of an image mount listens on a unix socket in the store
//! (`run/HEX.sock`, named by the mountpoint's path; mode 0600, in the
//! store's 0700 dir) and answers each connection with its counters.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
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
        std::fs::create_dir_all(path.parent().expect("in run/"))?;
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(l)
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
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    print!("{s}");
    Ok(())
}
