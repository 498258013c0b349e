//! Mounting an image while it is pulled.
//!
//! [`LivePull::start`] pulls an image that is not in the store on a thread
//! of its own and returns as soon as the image's manifest and config are in
//! hand, with one [`StreamLayer`] per layer. A tar layer is complete once
//! it has streamed whole and its digest (and diff_id) was checked: until
//! then what needs it waits, and gets EIO if the check fails, so no byte
//! of a tampered layer reaches a program. Each layer completes on its own,
//! as soon as it is checked, while the others still stream. With
//! [`PullOptions::unverified_streaming`] a tar layer's entries reach its
//! stream as the indexer stores them instead, so a file is readable once
//! the download has passed it, before anything was checked. A zstd:chunked
//! layer is complete once its table of contents has arrived and was
//! checked (each chunk is checked when read); a layer the store already
//! holds is complete at once. When a layer is recorded in the store, its
//! stream hands over to the layer opened from the store, as a later mount
//! would open it. When the pull fails, what waits for the layers it did
//! not finish gets EIO and the error; the image is recorded only when
//! every layer is.

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use super::digest::Digest;
use super::open::{new_cache, open_layer, registry_for, CacheOptions};
use super::pull::{pull, LayerOutcome, Progress, PullOptions, PullReport};
use super::registry::Registry;
use super::store::{LayerKey, Origin, Store};
use super::toc::TocEntry;
use crate::cache::BlockCache;
use crate::layer::{Layer, Stream};
use crate::lock::{Mutex, Rank};

/// The layers a mount gets from [`LivePull::start`] (top first), their
/// cache, and the pull.
pub type LiveImage = (Vec<Arc<dyn Layer>>, Arc<BlockCache>, Arc<LivePull>);

/// An image pulled while mounted (see the module doc).
pub struct LivePull {
    store: Arc<Store>,
    opts: CacheOptions,
    cache: Arc<BlockCache>,
    /// Set once the manifest is known.
    image: OnceLock<Known>,
    /// Tells `start` the layers are known, or why they never will be.
    ready: Mutex<Option<mpsc::Sender<Result<(), String>>>>,
    /// How the pull ended.
    ended: OnceLock<Result<PullReport, String>>,
    /// Serve a tar layer's entries as they arrive, unchecked.
    unverified_streaming: bool,
}

struct Known {
    name: String,
    /// The image's config blob.
    config: Vec<u8>,
    registry: Option<Arc<Registry>>,
    /// Bottom first, as the manifest lists them.
    streams: Vec<(Digest, Arc<Stream>)>,
}

impl LivePull {
    /// Starts pulling `name` into `store` and returns once its layers are
    /// known; an error if the image cannot be found or read.
    pub fn start(
        store: Store,
        name: &str,
        pull_opts: PullOptions,
        opts: CacheOptions,
    ) -> io::Result<LiveImage> {
        let store = Arc::new(store);
        let cache = new_cache(&store, &opts);
        let (tx, rx) = mpsc::channel();
        let live = Arc::new(LivePull {
            store: store.clone(),
            opts,
            cache: cache.clone(),
            image: OnceLock::new(),
            ready: Mutex::new(Rank::Pull, Some(tx)),
            ended: OnceLock::new(),
            unverified_streaming: pull_opts.unverified_streaming,
        });
        let me = live.clone();
        let name_owned = name.to_owned();
        std::thread::Builder::new()
            .name("rcfs-pull".into())
            .spawn(move || {
                let r = pull(&me.store, &name_owned, &pull_opts, &*me);
                me.end(r);
            })?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(io::Error::other(why)),
            Err(_) => return Err(io::Error::other(format!("pulling {name} stopped"))),
        }
        let known = live.image.get().expect("set before ready");
        let layers = known
            .streams
            .iter()
            .rev()
            .map(|(_, s)| Arc::new(s.layer()) as Arc<dyn Layer>)
            .collect();
        Ok((layers, cache, live))
    }

    /// The image's config blob (known once [`LivePull::start`] returned).
    pub fn config(&self) -> Option<&[u8]> {
        self.image.get().map(|k| &k.config[..])
    }

    /// Why the pull failed, once it has.
    pub fn failure(&self) -> Option<String> {
        match self.ended.get() {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// Lines for `rcfs stats`: how far the pull is.
    pub fn status(&self) -> String {
        let (total, pending) = self.image.get().map_or((0, 0), |k| {
            let left = k.streams.iter().filter(|(_, s)| !s.ended()).count();
            (k.streams.len(), left)
        });
        let state = match self.ended.get() {
            None => "pulling".to_owned(),
            Some(Ok(_)) => "done".to_owned(),
            Some(Err(why)) => format!("failed: {why}"),
        };
        format!(
            "pull {state}
pull_layers {total}
pull_layers_pending {pending}
"
        )
    }

    fn end(&self, r: io::Result<PullReport>) {
        let r = r.map_err(|e| format!("{e}"));
        let failed = r.as_ref().err().cloned();
        // Known before anything waiting hears of it (see `failure`).
        let _ = self.ended.set(r);
        if let Some(why) = &failed {
            log::error!("pulling the mounted image failed: {why}");
            if let Some(k) = self.image.get() {
                for (_, s) in &k.streams {
                    s.finish(Err(why.clone()));
                }
            }
            if let Some(tx) = self.ready.lock().take() {
                let _ = tx.send(Err(why.clone()));
            }
        }
    }

    fn stream(&self, d: &Digest) -> Option<&Arc<Stream>> {
        let k = self.image.get()?;
        k.streams.iter().find(|(x, _)| x == d).map(|(_, s)| s)
    }
}

impl Progress for LivePull {
    fn layer_start(&self, digest: &Digest, size: u64, what: &str) {
        log::debug!("pulling the {what} of layer {digest} ({size} bytes)");
    }

    fn layer_bytes(&self, _: &Digest, _: u64) {}

    fn layer_done(&self, layer: &LayerKey, outcome: &LayerOutcome) {
        let (Some(k), Some(s)) = (self.image.get(), self.stream(layer.blob())) else {
            return;
        };
        log::debug!("layer {layer}: {outcome:?}");
        let opened = open_layer(
            &self.store,
            &k.name,
            layer,
            k.registry.as_ref(),
            &self.cache,
            &self.opts,
        );
        s.finish(match opened {
            Ok((_, l)) => Ok(l),
            Err(e) => Err(e.to_string()),
        });
    }

    fn note(&self, msg: &str) {
        log::debug!("{msg}");
    }

    fn image(&self, name: &str, origin: Option<&Origin>, layers: &[Digest], config: &[u8]) {
        let known = Known {
            name: name.to_owned(),
            config: config.to_vec(),
            registry: registry_for(origin),
            streams: Vec::new(),
        };
        let mut known = known;
        for d in layers {
            // A layer listed twice is one stream.
            let s = match known.streams.iter().find(|(x, _)| x == d) {
                Some((_, s)) => s.clone(),
                None => Stream::new(d.to_string(), self.cache.clone()),
            };
            known.streams.push((*d, s));
        }
        let _ = self.image.set(known);
        if let Some(tx) = self.ready.lock().take() {
            let _ = tx.send(Ok(()));
        }
    }

    fn entry(&self, layer: &Digest, entry: &TocEntry) {
        // Checked layers are served whole, from the store, once checked.
        if !self.unverified_streaming {
            return;
        }
        if let Some(s) = self.stream(layer) {
            s.push(entry);
        }
    }
}
