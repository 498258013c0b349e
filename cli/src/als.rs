//! `rcfs als MOUNTPOINT`: the store's layers served to podman and CRI-O as
//! their Additional Layer Store (see `rcfs_fs::als`), in the foreground
//! until unmounted or told to stop (SIGINT, SIGTERM, SIGHUP), which
//! unmounts: a dead store would fail every podman command.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use rcfs_fs::als::{Als, AlsFs, AlsOptions};
use rcfs_fs::image::open::CacheOptions;
use rcfs_fs::MountConfig;

/// What `rcfs als` was asked.
#[derive(Debug, Clone)]
pub struct AlsRequest {
    pub mountpoint: PathBuf,
    /// The store's root (`--root`).
    pub root: Option<PathBuf>,
    pub insecure: bool,
    pub cache_memory: u64,
    pub cache_disk: u64,
    pub debug: bool,
    pub allow_other: bool,
    pub threads: usize,
}

/// Mounts the store at the request's mountpoint and serves it until it is
/// unmounted.
pub fn serve(req: &AlsRequest) -> Result<()> {
    let mp = &req.mountpoint;
    let st = std::fs::metadata(mp)
        .with_context(|| format!("cannot use {} as the mountpoint", mp.display()))?;
    if !st.is_dir() {
        bail!(
            "{} is not a directory: make one to mount the layer store on",
            mp.display()
        );
    }
    let mp_str = mp.to_string_lossy();
    if !mp.is_absolute() || mp_str.contains([':', ',']) {
        bail!(
            "{}: containers/storage takes an absolute path without ':' or ',' for an additional \
             layer store; mount it elsewhere",
            mp.display()
        );
    }
    let store = crate::image::open_store(req.root.as_deref())?;
    // No gc while podman may read what this serves.
    let _in_use = store.lock_in_use().context("locking the store")?;
    let opts = AlsOptions {
        insecure: req.insecure,
        cache: CacheOptions {
            mem_bytes: req.cache_memory << 20,
            disk_bytes: req.cache_disk << 20,
            ..Default::default()
        },
        debug: req.debug,
    };
    let cfg = MountConfig {
        allow_other: req.allow_other,
        fsname: "rcfs".into(),
        subtype: "rcfs-als".into(),
        threads: req.threads,
        ..Default::default()
    };
    // Signals go to the thread that unmounts, not to the workers.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGHUP);
    sigs.thread_block().context("blocking signals")?;
    let als = Arc::new(Als::new(store, opts));
    let session = rcfs_fs::begin_mount(mp, &cfg)
        .and_then(|m| m.finish(AlsFs::new(als.clone())))
        .with_context(|| format!("cannot mount the layer store on {}", mp.display()))?;
    let unmounter = session.unmounter();
    std::thread::Builder::new()
        .name("rcfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = sigs.wait() {
                log::info!("{sig:?}: unmounting");
                if let Err(e) = unmounter.unmount() {
                    log::error!("unmount failed: {e}");
                }
            }
        })?;
    log::info!(
        "serving layers at {}: give podman `additionallayerstores = [\"{}:ref\"]`",
        mp.display(),
        mp.display()
    );
    session.run().context("serving the layer store")?;
    for (layer, n) in als.uses() {
        log::info!("layer {layer} was still used {n} times");
    }
    Ok(())
}
